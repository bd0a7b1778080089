"""Static-shape ONNX graphs for NPU toolchains (docs/export.md): the pattern Qualcomm AI Hub's and
ExecuTorch's on-device LLM exports share (docs/export.md).

``export_onnx(spec_or_loaded, out_dir, chunk=128, tile_batch=4, max_context=2048, quant="w4a16")`` writes

    llm_prefill.onnx   inputs  inputs_embeds [1, T, d] f32, position_ids [1, T] i64, attention_mask [1, 1, T, C+T] f32
                               (additive: 0 visible, -inf hidden), past_keys / past_values [L, KVH, C, hd] f32
                       outputs logits [1, T, V], new_keys / new_values [L, KVH, T, hd] (this chunk's, after RoPE)
    llm_decode.onnx    the same with T = 1, sharing the weights file with the prefill graph
    llm.weights        the LLM's initializers (ONNX external data, referenced by both graphs)
    embeddings.bin     the token embedding table, float32 [V, d] row-major (a CPU lookup, as deployments do)
    vit.onnx           pixel_values [B, 3, S, S] -> features [B, N, C]            (multimodal models)
    projector.onnx     features [B, N, C] -> image_embeds [B, tokens_per_tile, d] (down-sampler + projector)
    tokenizer.bin      the tokenizer;  manifest.json  everything a runtime or a vendor script needs

C = max_context - chunk past positions; the runtime owns the KV cache, passes it in and writes the returned slices
at the chunk's positions. ``quant``: ``w4a16`` (LLM matrices as com.microsoft MatMulNBits, 4 bits, block 32,
symmetric, zero point 8; ViT and projector as 8-bit MatMulNBits), ``w8a16`` (all 8-bit), ``fp32``. Quantized
weights use this project's q4_0 / q8_0 rounding, so a GGUF Q4_0 / Q8_0 tensor maps to MatMulNBits exactly;
others (Q4_1) are dequantized and re-quantized, and the manifest says so.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

FORMAT_NAME = "bluelm-v-onnx"
FORMAT_VERSION = 1
QUANTS = {"w4a16": (4, 8), "w8a16": (8, 8), "fp32": (None, None)}  # (LLM bits, ViT bits)
OPSET = 17
BLOCK = 32


def _check(chunk: int, tile_batch: int, max_context: int, quant: str) -> None:
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; supported: {', '.join(QUANTS)}")
    for name, v in (("chunk", chunk), ("tile_batch", tile_batch), ("max_context", max_context)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if chunk >= max_context:
        raise ValueError(f"chunk {chunk} must be smaller than max_context {max_context} (the graphs take "
                         f"max_context - chunk past positions)")


def _llm_module(lm, t: int, past: int):
    import torch
    import torch.nn as nn

    from bluelm_v.models.llm import apply_rope

    cfg = lm.cfg

    class LlmChunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = lm

        def forward(self, inputs_embeds, position_ids, attention_mask, past_keys, past_values):
            # inputs_embeds [1, t, d]; position_ids [1, t]; attention_mask [1, 1, t, past + t];
            # past_keys / past_values [L, KVH, past, hd] -> logits [1, t, V], new_keys / new_values [L, KVH, t, hd]
            cos = self.lm.rope_cos[position_ids][:, None]  # [1, 1, t, hd]
            sin = self.lm.rope_sin[position_ids][:, None]
            h = inputs_embeds
            new_k, new_v = [], []
            groups = cfg.heads // cfg.kv_heads
            for i, layer in enumerate(self.lm.model.layers):
                a = layer.self_attn
                x = layer.input_layernorm(h)
                q = a.q_proj(x).view(1, t, cfg.heads, cfg.dim_head).transpose(1, 2)
                k = a.k_proj(x).view(1, t, cfg.kv_heads, cfg.dim_head).transpose(1, 2)
                v = a.v_proj(x).view(1, t, cfg.kv_heads, cfg.dim_head).transpose(1, 2)
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
                new_k.append(k[0])
                new_v.append(v[0])
                keys = torch.cat([past_keys[i:i + 1], k], dim=2)  # [1, KVH, past + t, hd]
                vals = torch.cat([past_values[i:i + 1], v], dim=2)
                # GQA without repeating the cache and with no tensor above 4-D (NPU compilers take no 5-D): the
                # query heads sharing a KV head are stacked as rows, [1, KVH, groups * t, hd]
                qg = q.reshape(1, cfg.kv_heads, groups * t, cfg.dim_head)
                scores = torch.matmul(qg, keys.transpose(2, 3)) * a.scale  # [1, KVH, groups * t, past + t]
                scores = scores.reshape(cfg.kv_heads, groups, t, past + t) + attention_mask[0]
                probs = torch.softmax(scores, dim=-1).reshape(1, cfg.kv_heads, groups * t, past + t)
                out = torch.matmul(probs, vals).reshape(1, cfg.heads, t, cfg.dim_head)
                out = out.transpose(1, 2).reshape(1, t, -1)
                h = h + a.o_proj(out)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            logits = self.lm.output_logits(self.lm.model.norm(h))
            return logits, torch.stack(new_k), torch.stack(new_v)

    return LlmChunk().eval()


def _export(module, args, path: Path, inputs: list[str], outputs: list[str]) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def _quantize_matmuls(model, bits: int, names_in: Optional[set] = None, note: Optional[dict] = None):
    """Replace MatMul(x, W^T initializer [K, N]) by com.microsoft MatMulNBits with `bits`-bit blocks of 32 (our
    q4_0 / q8_0 rounding; zero point 2^(bits-1))."""
    import onnx
    from onnx import helper, numpy_helper

    from bluelm_v import quant

    inits = {i.name: i for i in model.graph.initializer}
    fmt = "q4_0" if bits == 4 else "q8_0"
    new_nodes, drop = [], set()
    for node in model.graph.node:
        b = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if b is None or b not in inits or len(inits[b].dims) != 2 or inits[b].dims[0] % BLOCK:
            new_nodes.append(node)
            continue
        wt = numpy_helper.to_array(inits[b])  # [K, N]
        k, n = wt.shape
        rows = quant.quantize(np.ascontiguousarray(wt.T, dtype=np.float32), fmt)  # [N, K/32 * block_bytes]
        blocks = rows.reshape(n, k // BLOCK, -1)
        scales = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, K/32]
        payload = blocks[..., 2:]
        if bits == 4:
            # ours: byte i = element i (low) | element i + 16 (high); MatMulNBits: byte j = 2j (low) | 2j+1 (high)
            q = np.concatenate([payload & 0x0F, payload >> 4], axis=-1)  # [N, K/32, 32] values 0..15
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        else:
            packed = (payload.view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        base = node.name or b
        qb, sc = numpy_helper.from_array(packed, f"{base}_q{bits}"), numpy_helper.from_array(scales, f"{base}_scales")
        model.graph.initializer.extend([qb, sc])
        drop.add(b)
        new_nodes.append(helper.make_node("MatMulNBits", [node.input[0], qb.name, sc.name], list(node.output),
                                          name=f"{base}_nbits", domain="com.microsoft", K=k, N=n, bits=bits,
                                          block_size=BLOCK))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    keep = [i for i in model.graph.initializer if i.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(drop)


def _static_shapes(model) -> dict:
    shapes = {}
    for v in list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if any(d is None or d < 1 for d in dims):
            raise RuntimeError(f"{v.name} has a non-static shape {dims}")
        shapes[v.name] = dims
    return shapes


def _share_weights(prefill_path: Path, decode_path: Path, weights_name: str) -> None:
    """Write the prefill graph's initializers once to `weights_name` and point the decode graph's identical
    initializers (same content-derived name) at the same bytes; the few the decode graph alone has stay inline."""
    import onnx
    from onnx import external_data_helper as ext

    pre = onnx.load(str(prefill_path))
    ext.convert_model_to_external_data(pre, all_tensors_to_one_file=True, location=weights_name, size_threshold=0)
    onnx.save_model(pre, str(prefill_path))
    pre = onnx.load(str(prefill_path), load_external_data=False)
    where = {i.name: list(i.external_data) for i in pre.graph.initializer}
    dec = onnx.load(str(decode_path))
    shared = 0
    for init in dec.graph.initializer:
        if init.name not in where:
            continue
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        init.external_data.extend(where[init.name])
        shared += 1
    if shared == 0:
        raise RuntimeError("the decode graph shares no weights with the prefill graph")
    onnx.save_model(dec, str(decode_path))


def _content_names(model) -> None:
    """Name every initializer after its content (dtype, shape, bytes), so the prefill and decode traces, which
    number their initializers differently, agree on the names of the weights they share."""
    import hashlib

    from onnx import numpy_helper

    rename = {}
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        h = hashlib.sha1(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:20]
        rename[init.name] = f"w_{h}"
    seen = set()
    keep = []
    for init in model.graph.initializer:
        init.name = rename[init.name]
        if init.name not in seen:
            seen.add(init.name)
            keep.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for node in model.graph.node:
        for j, name in enumerate(node.input):
            if name in rename:
                node.input[j] = rename[name]


def export_onnx(source: Any, out_dir: Union[str, Path], *, chunk: int = 128, tile_batch: int = 4,
                max_context: int = 2048, quant: str = "w4a16", progress: bool = False) -> Path:
    """Write the static graphs and the manifest for `source` (a spec load_model understands, or a LoadedModel)."""
    import onnx
    import torch
    from tqdm import tqdm

    from bluelm_v.models.reference import LoadedModel, load_model

    _check(chunk, tile_batch, max_context, quant)
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    cfg = loaded.config
    lm = loaded.llm
    if max_context > cfg.llm.max_context:
        raise ValueError(f"max_context {max_context} exceeds the model's context of {cfg.llm.max_context}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm_bits, vit_bits = QUANTS[quant]
    past = max_context - chunk
    L, kvh, hd, d, V = cfg.llm.layers, cfg.llm.kv_heads, cfg.llm.dim_head, cfg.llm.hidden, cfg.llm.vocab
    steps = ["prefill graph", "decode graph", "weights", "vision"] if cfg.multimodal else ["prefill graph", "decode graph", "weights"]
    bar = tqdm(steps, desc="export", disable=not progress, leave=False)
    names_in = ["inputs_embeds", "position_ids", "attention_mask", "past_keys", "past_values"]
    names_out = ["logits", "new_keys", "new_values"]
    graphs = {}
    for name, t in (("llm_prefill", chunk), ("llm_decode", 1)):
        bar.set_postfix_str(name)
        args = (torch.zeros(1, t, d), torch.arange(t)[None], torch.zeros(1, 1, t, past + t),
                torch.zeros(L, kvh, past, hd), torch.zeros(L, kvh, past, hd))
        path = out / f"{name}.onnx"
        _export(_llm_module(lm, t, past), args, path, names_in, names_out)
        model = onnx.load(str(path))
        if llm_bits:
            _quantize_matmuls(model, llm_bits)
        _content_names(model)
        onnx.save_model(model, str(path))
        graphs[name] = {"file": path.name, "shapes": _static_shapes(model), "tokens": t}
        bar.update()
    _share_weights(out / "llm_prefill.onnx", out / "llm_decode.onnx", "llm.weights")
    bar.update()
    emb = lm.model.embed_tokens.weight.detach().float().contiguous().numpy()
    emb.tofile(out / "embeddings.bin")
    if cfg.multimodal:
        vlm = loaded.vlm
        vc = cfg.vision
        pix = torch.zeros(tile_batch, vc.channels, vc.image_size, vc.image_size)
        _export(vlm.vision_tower.eval(), (pix,), out / "vit.onnx", ["pixel_values"], ["features"])
        feats = torch.zeros(tile_batch, vc.tokens_per_tile, vc.hidden)
        _export(vlm.mm_projector.eval(), (feats,), out / "projector.onnx", ["features"], ["image_embeds"])
        for name in ("vit", "projector"):
            model = onnx.load(str(out / f"{name}.onnx"))
            if vit_bits:
                _quantize_matmuls(model, vit_bits)
            onnx.save_model(model, str(out / f"{name}.onnx"))
            graphs[name] = {"file": f"{name}.onnx", "shapes": _static_shapes(model), "tiles": tile_batch}
        bar.update()
    bar.close()
    for g in graphs.values():
        onnx.checker.check_model(str(out / g["file"]))
    loaded.tokenizer.core.save(str(out / "tokenizer.bin"))
    manifest = _manifest(loaded, graphs, chunk, past, tile_batch, max_context, quant, emb.shape)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


def _manifest(loaded, graphs, chunk, past, tile_batch, max_context, quant, emb_shape) -> dict:
    from bluelm_v import __version__
    from bluelm_v.export.package import _tokenizer_entry
    from bluelm_v.models.checkpoint import config_to_json

    cfg = loaded.config
    llm_bits, vit_bits = QUANTS[quant]
    q = {"llm_matmuls": "fp32" if not llm_bits else f"MatMulNBits bits={llm_bits} block={BLOCK} symmetric (zero point {2 ** (llm_bits - 1)})",
         "vit_matmuls": "fp32" if not vit_bits else f"MatMulNBits bits={vit_bits} block={BLOCK} symmetric (zero point {2 ** (vit_bits - 1)})",
         "norms_biases_embeddings": "fp32",
         "source": "re-quantized from the float weights with q4_0/q8_0 rounding" if llm_bits else "float"}
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_by": f"bluelm-v {__version__}",
        "source": loaded.source, "quantization": quant, "quantization_detail": q,
        "model": config_to_json(cfg),
        "graphs": graphs,
        "llm": {"chunk": chunk, "past": past, "max_context": max_context, "layers": cfg.llm.layers,
                "kv_heads": cfg.llm.kv_heads, "head_dim": cfg.llm.dim_head, "weights_file": "llm.weights",
                "kv_layout": "[layers, kv_heads, positions, head_dim], keys after RoPE (HF rotate-half), float32",
                "positions": "position_ids = absolute positions of the chunk's tokens (padding rows: any valid "
                             "position, their outputs are ignored)",
                "mask": "attention_mask[0, 0, i, j] = 0 where query i may see key j, -inf elsewhere; keys 0..past-1 "
                        "are past_keys slots, past..past+T-1 this chunk's tokens",
                "cache_update": "the runtime writes new_keys / new_values[:, :, :valid] at positions "
                                "start..start+valid-1 of its cache"},
        "embeddings": {"file": "embeddings.bin", "dtype": "float32", "shape": list(emb_shape)},
        "vision": None if not cfg.multimodal else {
            "tile_batch": tile_batch, "image_size": cfg.vision.image_size, "mean": list(cfg.vision.mean),
            "std": list(cfg.vision.std), "tokens_per_tile": cfg.image_tokens_per_tile(), "dynres": cfg.dynres},
        "tokenizer": _tokenizer_entry(loaded.tokenizer, list(loaded.eos_ids)),
    }


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "QUANTS", "export_onnx"]
