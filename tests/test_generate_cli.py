"""`bluelm-v generate` (the reference model) end to end in a subprocess: tiny with an image, SmolLM2's GGUF, an HF
folder written by save_pretrained, and bad input as a one-line error."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bluelm_v", *args], capture_output=True, text=True, timeout=300)


def test_generate_tiny_with_image_matches_the_python_api(tmp_path):
    from PIL import Image

    from bluelm_v.models.reference import load_vlm

    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)).save(img)
    r = run_cli("generate", "--model", "tiny", "--image", str(img), "--prompt", "Hi", "--max-new-tokens", "6")
    assert r.returncode == 0, r.stderr
    want = load_vlm("tiny").generate([{"type": "image", "value": str(img)}, {"type": "text", "value": "Hi"}],
                                     max_new_tokens=6)
    assert r.stdout[:-1] == want and "tok/s" in r.stderr


def test_generate_smollm2_and_hf_folder(tmp_path, smollm2_gguf):
    r = run_cli("generate", "--model", "smollm2-135m-gguf", "--prompt", "What is the capital of France?",
                "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    from bluelm_v.models.reference import load_model, save_pretrained

    folder = save_pretrained(load_model("tiny", seed=3), tmp_path / "hf")
    a = run_cli("generate", "--model", str(folder), "--prompt", "abc", "--max-new-tokens", "5")
    b = subprocess.run([sys.executable, "-c", "from bluelm_v.models.reference import load_vlm; "
                        "print(load_vlm('tiny', seed=3).generate('abc', max_new_tokens=5), end='')"],
                       capture_output=True, text=True, timeout=300)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout[:-1] == b.stdout


def test_generate_bad_input_is_one_line():
    r = run_cli("generate", "--model", "no-such-model", "--prompt", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.strip()
    r = run_cli("generate", "--model", "tiny", "--prompt", "x", "--top-p", "0")
    assert r.returncode == 1 and "top_p" in r.stderr
