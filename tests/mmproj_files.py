"""Test helper: llama.cpp-style files (an LLM GGUF and its mmproj GGUF) written from a small random HF folder of an
InternVL, Idefics3 or LLaVA-OneVision model, so the loader in bluelm_v/models/mmproj.py can be checked against
the folder they came from without the network.

llama.cpp's converter itself is not run here (its snapshot is too large to fetch in this environment); the files
follow its conventions instead, with the vision tensor names taken from llama.cpp's own table as the ``gguf``
package ships it (``gguf.get_tensor_name_map(MODEL_ARCH.MMPROJ, n)``), not from the loader's map:

- modern converter (``convert_hf_to_gguf.py --mmproj``; InternVL, Idefics3): keys ``clip.projector_type``,
  ``clip.vision.*`` with ``projection_dim`` = the LLM width, ``clip.vision.projector.scale_factor``,
  ``preproc_image_size`` (Idefics3); InternVL's projector under the names ``mlp1.{0,1,3}`` (its names_map),
  ``lambda_N`` with ``.weight`` appended;
- older LLaVA converter (``convert_image_encoder_to_gguf.py`` after llava surgery; LLaVA-OneVision):
  ``clip.projector_type`` "mlp", ``mm_patch_merge_type`` "spatial_unpad", flattened ``image_grid_pinpoints``,
  ``feature_layer``, SigLIP ``fc1`` written as ``ffn_down`` (its known swap), ``mm.0`` / ``mm.2``,
  ``model.image_newline``, no ``post_ln``;
- the LLM: llama's ``attn_q`` / ``attn_k`` rows permuted for llama.cpp's RoPE, Qwen2's not; a byte-level BPE
  vocabulary with the family's special tokens at the ids the random models use.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file
from transformers.convert_slow_tokenizer import bytes_to_unicode

from bluelm_v.models.gguf_checkpoint import permute_rows_to_gguf
from test_checkpoints import add_test_tokenizer

SPECIALS = {  # family -> {id: token}, the ids the random models reserve (bluelm_v.models.families)
    "internvl": {297: "<img>", 298: "</img>", 299: "<IMG_CONTEXT>"},
    "idefics3": {399: "<image>", 398: "<fake_token_around_image>", 397: "<global-img>",
                 **{361 + 6 * r + c: f"<row_{r + 1}_col_{c + 1}>" for r in range(6) for c in range(6)}},
    "llava_onevision": {299: "<image>"},
}
_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def vocab(n: int, specials: dict) -> tuple[list, list, list]:
    """Bytes, three chat tokens, the specials at their ids, letter pairs (with their merges) in between."""
    table = bytes_to_unicode()
    tokens = [table[b] for b in range(256)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * 256 + [3, 3, 3]
    merges = []
    pairs = (a + b for a in "etaoinshrdlucmfwypvbgkjqxz" for b in "etaoinshrdlucmfwypvbgkjqxz")
    while len(tokens) < n:
        if len(tokens) in specials:
            tokens.append(specials[len(tokens)])
            types.append(3)
        else:
            p = next(pairs)
            tokens.append(p)
            types.append(1)
            merges.append(f"{p[0]} {p[1]}")
    return tokens, types, merges


def _put(w: gguf.GGUFWriter, name: str, a: np.ndarray, qtype=None) -> None:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if qtype is None or a.ndim != 2:
        w.add_tensor(name, a)
    elif qtype == gguf.GGMLQuantizationType.F16:
        w.add_tensor(name, a.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)


def _close(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llm(folder: Path, fam: str, path: Path, qtype=None) -> Path:
    """The VLM's LLM as llama.cpp's converter writes it (text config, decoder tensors, tokenizer)."""
    cfg = json.loads((folder / "config.json").read_text())
    tc = cfg["text_config"]
    arch = tc.get("model_type", "llama")
    state = load_file(str(folder / "model.safetensors"))
    text = {}
    for name, a in state.items():
        m = re.match(r"^(?:model\.)?(?:language_model\.|text_model\.)(?:model\.)?(.*)$", name)
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            text["lm_head.weight"] = a
        elif m:
            text["model." + m.group(1)] = a
    tied = bool(cfg.get("tie_word_embeddings", tc.get("tie_word_embeddings", False)))
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(f"random {fam} LLM")
    heads, kv = tc["num_attention_heads"], tc["num_key_value_heads"]
    w.add_block_count(tc["num_hidden_layers"])
    w.add_context_length(tc["max_position_embeddings"])
    w.add_embedding_length(tc["hidden_size"])
    w.add_feed_forward_length(tc["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    rope = (tc.get("rope_parameters") or {}).get("rope_theta", tc.get("rope_theta", 10000.0))
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(tc["rms_norm_eps"])
    add_test_tokenizer(w, *vocab(tc["vocab_size"], SPECIALS[fam]))
    for name, a in text.items():
        if name == "lm_head.weight":
            if not tied:
                _put(w, "output.weight", a, qtype)
            continue
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            _put(w, {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[name],
                 a, qtype)
            continue
        i, rest = name[len("model.layers."):].split(".", 1)
        part, kind = rest.rsplit(".", 1)
        if arch == "llama" and part in ("self_attn.q_proj", "self_attn.k_proj"):
            a = permute_rows_to_gguf(a, heads if part.endswith("q_proj") else kv)
        _put(w, f"blk.{i}.{_LAYER[part]}.{kind}", a, qtype)
    _close(w)
    return path


def _hub_names(fam: str, name: str) -> str:
    """save_pretrained's names -> the hub layout llama.cpp's converter reads (its filter_tensors renames)."""
    if fam == "internvl":
        name = re.sub(r"^(model\.)?", "model.", name, count=1)
        mlp = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}
        m = re.match(r"^model\.multi_modal_projector\.(layer_norm|linear_1|linear_2)\.(weight|bias)$", name)
        if m:
            return f"mlp1.{mlp[m.group(1)]}.{m.group(2)}"
        if re.search(r"\.lambda_\d$", name) or name.endswith("position_embeddings") or name.endswith("cls_token"):
            name += ".weight" if "lambda_" in name or "position_embeddings" in name else ""
    return name


def write_mmproj(folder: Path, fam: str, path: Path, qtype=None, projection_dim=None, projector_type=None) -> Path:
    """The vision tower and projector of the folder as an mmproj GGUF (module doc); ``projection_dim`` and
    ``projector_type`` override those keys (bad files for the tests)."""
    cfg = json.loads((folder / "config.json").read_text())
    vc, tc = cfg["vision_config"], cfg["text_config"]
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    layers = vc["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), arch="clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_clip_has_vision_encoder(True)
    size = vc["image_size"][0] if isinstance(vc["image_size"], list) else vc["image_size"]
    patch = vc["patch_size"][0] if isinstance(vc["patch_size"], list) else vc["patch_size"]
    w.add_vision_projection_dim(projection_dim or tc["hidden_size"])
    w.add_vision_image_size(size)
    w.add_vision_patch_size(patch)
    w.add_vision_embedding_length(vc["hidden_size"])
    w.add_vision_feed_forward_length(vc["intermediate_size"])
    w.add_vision_block_count(layers)
    w.add_vision_head_count(vc["num_attention_heads"])
    w.add_vision_image_mean(proc["image_mean"])
    w.add_vision_image_std(proc["image_std"])
    w.add_vision_attention_layernorm_eps(vc.get("layer_norm_eps", 1e-6))
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, max(layers, 4))
    legacy = fam == "llava_onevision"
    if fam == "idefics3":
        w.add_clip_projector_type(projector_type or gguf.VisionProjectorType.IDEFICS3)
        w.add_vision_projector_scale_factor(cfg.get("scale_factor", 2))
        w.add_vision_use_gelu(True)
        w.add_vision_preproc_image_size(proc["size"]["longest_edge"])
    elif fam == "internvl":
        w.add_clip_projector_type(projector_type or gguf.VisionProjectorType.INTERNVL)
        w.add_vision_use_gelu(True)
        w.add_vision_projector_scale_factor(int(1.0 / cfg.get("downsample_ratio", 0.5)))
        w.add_vision_preproc_max_tiles(proc["max_patches"])
        w.add_vision_preproc_min_tiles(proc["min_patches"])
    else:  # the older LLaVA converter's keys
        w.add_string("clip.projector_type", projector_type or "mlp")
        w.add_bool("clip.has_llava_projector", True)
        w.add_string("clip.vision.mm_patch_merge_type", "spatial_unpad")
        w.add_array("clip.vision.image_grid_pinpoints", [v for p in cfg["image_grid_pinpoints"] for v in p])
        w.add_array("clip.vision.feature_layer", [layers])  # vision_feature_layer -1, made non-negative
        w.add_string("clip.vision.image_aspect_ratio", cfg["vision_aspect_ratio"])
        w.add_bool("clip.use_gelu", vc.get("hidden_act") == "gelu")
    for name, a in state.items():
        if legacy:
            if name == "image_newline" or name == "model.image_newline":
                _put(w, "model.image_newline", a)
                continue
            m = re.match(r"^(?:model\.)?multi_modal_projector\.linear_([12])\.(weight|bias)$", name)
            if m:
                _put(w, f"mm.{0 if m.group(1) == '1' else 2}.{m.group(2)}", a, qtype)
                continue
            m = re.match(r"^(?:model\.)?vision_tower\.(?:vision_model\.)?(.*)$", name)
            if not m or m.group(1).startswith(("head.", "post_layernorm")):
                continue  # the LLM, SigLIP's pooling head, and the LayerNorm LLaVA does not apply
            sub = m.group(1)
            sub = sub.replace("mlp.fc1", "FC1").replace("mlp.fc2", "mlp.fc1").replace("FC1", "mlp.fc2")  # its swap
            hf = "vision_tower.vision_model." + sub
        else:
            hf = _hub_names(fam, name)
            if not any(k in hf for k in ("vision_tower", "vision_model", "connector", "mlp1.")):
                continue
        base, _, kind = hf.rpartition(".")
        gname = table.get_name(base) if kind in ("weight", "bias") else None
        if gname is None:
            gname = table.get_name(hf)
            kind = ""
        if gname is None:
            raise KeyError(f"llama.cpp's table has no name for {hf}")
        if gname in ("v.class_embd",) and kind == "weight":
            kind = ""
        _put(w, f"{gname}.{kind}" if kind else gname, a.reshape(-1) if gname == "v.class_embd" else a,
             qtype if ".blk." in gname or gname.startswith("mm.") else None)
    _close(w)
    return path


__all__ = ["vocab", "write_llm", "write_mmproj"]
