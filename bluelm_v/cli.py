"""The ``bluelm-v`` command: parses the subcommand and hands over to bluelm_v/commands/<name>.py.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when its
command runs, so light commands (plan, info) never import torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("bluelm_v.commands.demo", "the main job: the three resolution schemes side by side, with a figure"),
    "plan": ("bluelm_v.commands.plan", "print the tiling plan of one image or WxH size"),
    "info": ("bluelm_v.commands.info", "versions, instruction sets and shipped configs"),
    "ablate": ("bluelm_v.commands.ablate", "alpha and chunk-size ablations on the device-latency simulator"),
    "eval": ("bluelm_v.commands.eval", "run and score VLMEvalKit benchmarks (resumable, VLMEvalKit-exact scores)"),
    "package": ("bluelm_v.commands.package", "write a model package for the native engine (from a config, GGUF or HF folder)"),
    "generate": ("bluelm_v.commands.generate", "generate with the PyTorch reference model (streams the text)"),
    "export": ("bluelm_v.commands.export", "static-shape ONNX graphs (ViT, projector, LLM prefill/decode) for NPU toolchains"),
    "run": ("bluelm_v.commands.run", "answer a prompt (and images) with the native engine and print the timing table"),
    "check-reference": ("bluelm_v.commands.check_reference",
                        "compare the torch reference with HF transformers on the same inputs (JSON)"),
    "data": ("bluelm_v.commands.data", "benchmark data: `data fetch NAME` downloads a VLMEvalKit TSV with MD5 check"),
    "bench": ("bluelm_v.commands.bench", "llama-bench's table for the native engine: pp/tg tokens/s with spread"),
}


# A missing optional dependency -> the extra that installs it (pyproject.toml's optional-dependencies).
EXTRAS = {"torch": "torch", "safetensors": "models", "gguf": "models", "tokenizers": "models", "onnx": "export",
          "onnxruntime": "export", "onnxruntime_qnn": "qnn", "openpyxl": "eval", "xlsxwriter": "eval",
          "scipy": "sim", "llama_cpp": "server", "transformers": "dev"}


TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def missing_extra(exc: ModuleNotFoundError) -> str:
    """One line for a missing optional package: which one, and what to install."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"the Python package {top!r} is not installed ({exc})"
    # A bare torch requirement pulls the CUDA build on Linux (several GB); the CPU build has its own index.
    hint = f" (for the CPU build first: pip install torch --index-url {TORCH_CPU_INDEX})" if top == "torch" else ""
    return f"this needs the Python package {top!r}: pip install 'bluelm-v[{extra}]'{hint}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluelm-v", description="BlueLM-V-3B research harness")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others get a stub parser for --help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from bluelm_v import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("bluelm_v"):
            raise  # our own module missing is a broken installation, not an extra to install
        print(f"bluelm-v {args.command}: error: {missing_extra(exc)}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, TypeError) as exc:
        # Bad input from the user: one clear line, not a traceback.
        print(f"bluelm-v {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
