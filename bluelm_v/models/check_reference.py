"""The torch reference against HF transformers on the same inputs (``bluelm-v check-reference``).

Both sides load the same folder: HF through its Auto class (the code path a user's checkpoint takes), ours
through ``load_model``. The prompt's token ids and, for VLMs, the pixel values are the same on both sides, so
the logit figures measure the models alone; the preprocessing is measured apart, as ``max_abs_pixel_diff``
between the family's preprocessing here and the HF processor's on the same image.

With ``gguf`` (``--gguf LLM.gguf+mmproj.gguf``, or an LLM GGUF alone) our side loads llama.cpp's files converted
from the folder instead, and HF transformers still loads the folder: the figures then say whether the files give
the folder's model.

Greedy agreement is teacher-forced: HF generates ``tokens`` greedy tokens, then both models score the prompt
plus those tokens in one pass, and each step counts when our argmax equals HF's token.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from bluelm_v.models.families import FAMILIES, family, family_for

DEFAULT_PROMPT = "Describe the image in one sentence."
ENGINE_WEIGHTS = ("q4_0", "q4_1", "q8_0")  # LLM weight formats a --precision may name for the engine
PRECISIONS = ("f32", "default", *ENGINE_WEIGHTS)


def check_reference(model: Optional[str] = None, arch: Optional[str] = None, random: bool = False,
                    prompt: str = DEFAULT_PROMPT, tokens: int = 16, precision: str = "f32", image: Any = None,
                    seed: int = 0, dynres: Optional[dict] = None, workdir: Optional[str] = None,
                    activations: Optional[str] = None, kv_cache: Optional[str] = None,
                    gguf: Optional[str] = None) -> dict:
    """The comparison's JSON record (see docs/models.md for the fields). ``precision`` f32 compares the torch
    reference; the others (``default``: the package's q4_0 LLM weights, or a weight format) compare the native
    engine at that precision with ``activations`` and ``kv_cache`` (the package's deployed precision by default), the torch
    reference's figures beside them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {tokens}")
    if random == (model is not None):
        raise ValueError("give either --model HF_DIR or --arch ARCH --random")
    if gguf is not None and (random or precision != "f32"):
        raise ValueError("--gguf compares the torch reference loaded from llama.cpp's files with --model's HF folder "
                         "(--precision f32, no --random)")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if random:
            if arch not in FAMILIES:
                raise ValueError(f"--arch {arch!r} is not one of {', '.join(FAMILIES)}")
            folder = family(arch).random_hf(Path(tmp) / arch, seed)
        else:
            from bluelm_v._paths import resolve_model_spec

            folder = Path(resolve_model_spec(model))
            if not folder.exists():
                raise FileNotFoundError(f"{folder}: no such HF checkpoint folder or GGUF file")
        # a GGUF file is a LLaMA-family LLM (its loader refuses other architectures by name)
        fam = family("llama") if folder.is_file() else family_for(folder)  # before any weights are read
        engine = None if precision == "f32" else {"weights": "q4_0" if precision == "default" else precision,
                                                  "activations": activations, "kv_cache": kv_cache,
                                                  "workdir": Path(tmp) / "package"}
        if gguf is not None and folder.is_file():
            raise ValueError(f"--gguf needs --model to be the HF folder the files were converted from, not {folder}")
        return _compare(folder, fam, prompt, tokens, precision, image, seed, dynres, random, engine, gguf)


@torch.no_grad()
def _compare(folder: Path, fam, prompt: str, n: int, precision: str, image, seed: int, dynres, random: bool,
             engine: Optional[dict], gguf: Optional[str] = None) -> dict:
    import transformers

    from bluelm_v.models.reference import load_model

    ours = load_model(gguf or folder)  # config and tensor checks name the file before HF reads anything
    if gguf is not None and ours.config.family not in (fam.ARCH, "bluelm_v"):
        raise ValueError(f"--gguf {gguf} is a {ours.config.family} model but {folder} is {fam.ARCH}")
    if dynres and not ours.vlm:
        raise ValueError(f"--scheme/--alpha/--grid tile images; {ours.config.family} is a text-only model")
    if folder.is_file():  # transformers dequantizes the GGUF's tensors itself
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder.parent), gguf_file=folder.name,
                                                               dtype=torch.float32).eval()
    else:
        hf = getattr(transformers, fam.HF_AUTO).from_pretrained(str(folder), dtype=torch.float32).eval()
    inputs = fam.reference_inputs(folder, ours, prompt, image, seed, dynres or {}) if ours.vlm else \
        text_inputs(ours, prompt)
    for key, value in inputs.get("hf_config", {}).items():  # e.g. LLaVA-OneVision's canvas when ours replaces its
        setattr(hf.config, key, value)
        setattr(getattr(hf, "model", hf).config, key, value)
    ids = torch.tensor([inputs["ids"]])
    generated = greedy(hf, ids, n, inputs.get("hf_kwargs", {}))
    full = torch.cat([ids, torch.tensor([generated])], dim=1)
    ref_logits = hf(input_ids=full, attention_mask=torch.ones_like(full), **inputs.get("hf_kwargs", {})).logits[0]
    our_logits = ours_logits(ours, inputs["our_ids"] + generated, inputs.get("our_tiles"), inputs.get("layout", {}))
    t = ids.shape[1]
    cfg = ours.config
    torch_ref = figures(our_logits, ref_logits, generated, t)
    record = {
        "reference": f"transformers {transformers.__version__}",
        "arch": fam.ARCH,
        "model": "random (save_pretrained)" if random else str(folder),
        "precision": precision,
        "compared": "torch reference" if gguf is None else f"torch reference from {gguf}",
        **torch_ref,
        "tokens": n,
        "reference_tokens": generated,
        "prompt_tokens": t,
        "image_tokens": inputs.get("image_tokens", 0),
        "max_abs_pixel_diff": inputs.get("max_abs_pixel_diff"),
        "preprocessing": inputs.get("preprocessing"),
    }
    reason = cfg.engine_unsupported()
    if engine is None:
        record["engine"] = {"compared": False, "reason": "precision f32 compares the torch reference (the engine "
                            "has no float32 LLM weights)" if reason is None else reason}
        return record
    record.update(compared="native engine", torch_reference=torch_ref)
    if reason is not None:  # no engine figures are made up: the record says why there are none
        record.update({k: None for k in torch_ref}, engine={"compared": False, "reason": reason})
        return record
    logits, ran = engine_logits(folder if folder.is_file() else ours, inputs["our_ids"] + generated, engine,
                                inputs.get("our_tiles"), inputs.get("layout", {}))
    record.update(figures(logits, ref_logits, generated, t))
    record["engine"] = {"compared": True, "weights": engine["weights"], **ran}
    return record


def figures(logits: torch.Tensor, ref_logits: torch.Tensor, generated: list, t: int) -> dict:
    """max |logit diff| at the first generated step and over all, and the teacher-forced greedy agreement."""
    steps = slice(t - 1, t - 1 + len(generated))  # the position before each generated token predicts it
    return {"max_abs_logit_diff": float((logits[t - 1] - ref_logits[t - 1]).abs().max()),
            "max_abs_logit_diff_all_steps": float((logits[steps] - ref_logits[steps]).abs().max()),
            "greedy_agreement": (logits[steps].argmax(-1) == torch.tensor(generated)).float().mean().item()}


def engine_logits(source, ids: list, engine: dict, tiles: Optional[torch.Tensor] = None,
                  layout: Optional[dict] = None) -> tuple[torch.Tensor, dict]:
    """The native engine's logits [T, V] for every position of ``ids``, from a package of ``source`` (a loaded
    model, or a GGUF file packaged as ``bluelm-v package`` does) at the requested weight format, and the
    activations and KV cache it ran with. ``tiles`` (the same pixels the reference got) go to the engine's ViT
    through ``Session.submit_tiles``, with the anyres ``layout`` (grid, image_hw) when the model has one."""
    from bluelm_v.engine import Engine
    from bluelm_v.export.package import package

    pkg = package(source if not isinstance(source, Path) else str(source), engine["workdir"], quant=engine["weights"])
    eng = Engine(pkg, kv_cache=engine["kv_cache"], activations=engine["activations"], context=len(ids))
    session = eng.session()
    if tiles is not None:
        session.submit_tiles(tiles.numpy(), **(layout or {}))
    logits = torch.from_numpy(session.prefill(ids, all_logits=True).copy()).float()
    return logits, {"activations": eng.activations, "kv_cache": eng.kv_cache}


def greedy(hf, ids: torch.Tensor, n: int, kwargs: dict) -> list[int]:
    """n greedy tokens from the HF model by plain forward passes over the growing sequence: end-of-sequence ids
    count like any other token (generate's min_new_tokens would mask them, and its stopping cut the run)."""
    seq = ids
    for _ in range(n):
        logits = hf(input_ids=seq, attention_mask=torch.ones_like(seq), **kwargs).logits[0, -1]
        seq = torch.cat([seq, logits.argmax().view(1, 1)], dim=1)
    return seq[0, ids.shape[1]:].tolist()


def text_inputs(loaded, prompt: str) -> dict:
    ids = loaded.tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return {"ids": ids, "our_ids": list(ids)}


def ours_logits(loaded, ids: list, tiles: Optional[torch.Tensor], layout: dict) -> torch.Tensor:
    """Our logits [T, V] for every position of ``ids`` (IMAGE_TOKEN_ID runs filled from ``tiles``; ``layout``:
    the grid and image size an anyres layout needs)."""
    from bluelm_v.models.llm import prefill
    from bluelm_v.models.vlm import embed_with_images

    image_embeds = None if tiles is None else loaded.vlm.image_embeddings(tiles, **layout)
    embeds = embed_with_images(loaded.llm, ids, image_embeds)
    cache = loaded.llm.new_cache(1, len(ids))
    return prefill(loaded.llm, cache, embeds=embeds, all_logits=True)[0]


__all__ = ["DEFAULT_PROMPT", "PRECISIONS", "check_reference"]
