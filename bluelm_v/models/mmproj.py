"""llama.cpp's vision files: an ``mmproj`` GGUF (the ViT and the projector) beside a GGUF LLM, as llama.cpp users
download them (``llama-mtmd-cli --model LLM.gguf --mmproj mmproj-LLM.gguf``), loaded into the reference.

Spec syntax: ``LLM.gguf+mmproj.gguf`` (``split_spec``) wherever a model spec is taken (``load_model``,
``bluelm-v generate --model``, ``eval --model torch:...``), or ``load_model(llm, mmproj=path)``.

What an mmproj holds (llama.cpp's ``convert_hf_to_gguf.py --mmproj``, its ``gguf-py`` constants and
``tools/mtmd/clip*.cpp``; the LLaVA files come from its older ``convert_image_encoder_to_gguf.py``):

- ``general.architecture`` "clip", ``clip.has_vision_encoder``, ``clip.projector_type`` (or
  ``clip.vision.projector_type``), ``clip.vision.{image_size, patch_size, embedding_length, feed_forward_length,
  block_count, attention.head_count, attention.layer_norm_epsilon, projection_dim, image_mean, image_std}``;
  ``projection_dim`` is the LLM's embedding width;
- tensors ``v.patch_embd.{weight,bias}``, ``v.position_embd.weight``, ``v.class_embd``, ``v.blk.N.{ln1, ln2,
  attn_q, attn_k, attn_v, attn_out, attn_q_norm, attn_k_norm, ffn_up, ffn_down, ls1, ls2}.{weight,bias}``,
  ``v.post_ln``, and the projector's ``mm.*``.

The projector types read here, each onto one family of bluelm_v.models.families (PROJECTORS):

| clip.projector_type | family | projector tensors | extra keys |
|---|---|---|---|
| ``idefics3`` | idefics3 (SmolVLM) | ``mm.model.fc.weight`` | ``clip.vision.projector.scale_factor``, ``clip.vision.preproc_image_size`` |
| ``internvl`` | internvl | ``mm.model.mlp.{0,1,3}`` (LayerNorm, Linear, Linear) | ``clip.vision.projector.scale_factor`` (2), ``clip.vision.preproc_{min,max}_tiles`` |
| ``mlp`` with ``clip.vision.mm_patch_merge_type`` "spatial_unpad" | llava_onevision | ``mm.0``, ``mm.2``, ``model.image_newline`` (or ``v.image_newline``) | ``clip.vision.image_grid_pinpoints`` (flat h, w pairs), ``clip.vision.feature_layer``, ``clip.vision.image_aspect_ratio`` |

InternViT's flags are read from the tensors present (class token, layer scale, RMSNorm = no ``ln1.bias``, QK norm,
Q/K/V biases). The older LLaVA converter wrote SigLIP's ``fc1`` as ``ffn_down``; like clip.cpp, an ``ffn_down``
whose input width is the embedding width is taken as the up projection (``mlp`` and ``idefics3`` files).

Everything is checked from the header before tensor data is read: the projector type, every hyper-parameter
against the tensors' shapes, the projector's output width and ``projection_dim`` against the LLM's embedding
width, and the special tokens the family's prompt needs against the LLM's vocabulary (FormatError naming the file
and the key, tensor or token).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

from bluelm_v import FormatError
from bluelm_v.models.config import ModelConfig, ProjectorConfig, VisionConfig
from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

CLIP_ARCH = "clip"
PROJECTORS = {"idefics3": "idefics3", "internvl": "internvl", "mlp": "llava_onevision"}  # type -> family
# tokens each family's prompt block needs from the LLM's vocabulary (the first is HF's image token)
FAMILY_TOKENS = {"idefics3": ("<image>", "<fake_token_around_image>", "<global-img>"),
                 "internvl": ("<IMG_CONTEXT>", "<img>", "</img>"),
                 "llava_onevision": ("<image>",)}
MAX_LAYERS = 1024
_LAYER_MAP = {  # GGUF v.blk.N.<name> -> our vision_tower.encoder.layers.N.<name>
    "ln1": "layer_norm1", "ln2": "layer_norm2", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_out": "self_attn.out_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2",
}
_GLOBAL_MAP = {
    "v.patch_embd.weight": "vision_tower.embeddings.patch_embedding.weight",
    "v.patch_embd.bias": "vision_tower.embeddings.patch_embedding.bias",
    "v.position_embd.weight": "vision_tower.embeddings.position_embedding.weight",
    "v.class_embd": "vision_tower.embeddings.class_embedding",
    "v.post_ln.weight": "vision_tower.post_layernorm.weight",
    "v.post_ln.bias": "vision_tower.post_layernorm.bias",
}
_PROJECTOR_MAP = {
    "idefics3": {"mm.model.fc.weight": "mm_projector.linear_1.weight"},
    "internvl": {f"mm.model.mlp.{i}.{p}": f"mm_projector.{m}.{p}" for i, m in ((0, "norm"), (1, "linear_1"),
                                                                                 (3, "linear_2")) for p in ("weight", "bias")},
    "llava_onevision": {**{f"mm.{i}.{p}": f"mm_projector.{m}.{p}" for i, m in ((0, "linear_1"), (2, "linear_2"))
                           for p in ("weight", "bias")},
                        "model.image_newline": "image_newline", "v.image_newline": "image_newline"},
}


def split_spec(spec: Union[str, Path]) -> tuple[Path, Optional[Path]]:
    """``LLM.gguf+mmproj.gguf`` -> (LLM path, mmproj path); any other spec -> (it, None). A file whose own name
    holds a '+' is taken whole."""
    text = str(spec)
    if Path(text).exists() or "+" not in text:
        return Path(text), None
    llm, _, mmproj = text.rpartition("+")
    if not llm.lower().endswith(".gguf") or not mmproj.lower().endswith(".gguf"):
        return Path(text), None
    return Path(llm), Path(mmproj)


class MmprojCheckpoint(GGUFCheckpoint):
    """An opened mmproj GGUF (the same byte-level checks as any GGUF), read onto a family's vision config."""

    def __init__(self, path: Union[str, Path]):
        super().__init__(path)
        if self.arch != CLIP_ARCH:
            raise FormatError(f"{self.path}: key general.architecture is {self.arch!r}, not {CLIP_ARCH!r}: this is "
                              f"not an mmproj (vision) file")
        if self.metadata.get("clip.has_vision_encoder", True) is not True:
            raise FormatError(f"{self.path}: key clip.has_vision_encoder is false: no vision encoder in this mmproj")
        key = "clip.projector_type" if "clip.projector_type" in self.metadata else "clip.vision.projector_type"
        self.projector_type = self.metadata.get(key)
        if self.projector_type not in PROJECTORS:
            raise FormatError(f"{self.path}: key {key} is {self.projector_type!r}, which is not supported "
                              f"(supported: {', '.join(PROJECTORS)})")
        self.family = PROJECTORS[self.projector_type]
        if self.family == "llava_onevision" and self.metadata.get("clip.vision.mm_patch_merge_type") != "spatial_unpad":
            raise FormatError(f"{self.path}: key clip.vision.mm_patch_merge_type is "
                              f"{self.metadata.get('clip.vision.mm_patch_merge_type')!r}: only LLaVA-OneVision's "
                              f"'spatial_unpad' (anyres) layout is supported for projector type 'mlp'")

    # ---- shapes -------------------------------------------------------------------------------------------------
    def shape(self, name: str) -> Optional[tuple[int, ...]]:
        """Torch-order shape of a tensor from the header (None when absent); no data is read."""
        t = self._tensors.get(name)
        return None if t is None else tuple(int(d) for d in reversed(t.shape.tolist()))

    def _need(self, name: str) -> tuple[int, ...]:
        s = self.shape(name)
        if s is None:
            raise FormatError(f"{self.path}: missing tensor {name!r} (projector type {self.projector_type!r})")
        return s

    def _float_list(self, key: str, n: int) -> tuple[float, ...]:
        v = self.metadata.get(key)
        if not isinstance(v, (list, tuple)) or len(v) != n or not all(isinstance(x, (int, float)) for x in v):
            raise FormatError(f"{self.path}: key {key!r} is {v!r}, expected {n} numbers")
        return tuple(float(str(np.float32(x))) for x in v)  # the decimal the converter wrote, not float32's

    def _swapped_ffn(self, hidden: int) -> bool:
        """The older LLaVA converter named SigLIP's fc1 ``ffn_down``: an ``ffn_down`` reading the embedding width
        is the up projection (clip.cpp's rule, for the same projector types)."""
        down = self.shape("v.blk.0.ffn_down.weight")
        return self.family in ("llava_onevision", "idefics3") and down is not None and down[-1] == hidden

    # ---- config -------------------------------------------------------------------------------------------------
    def model_config(self, llm_ckpt: GGUFCheckpoint, tokenizer) -> ModelConfig:
        """The VLM's config: the LLM GGUF's decoder and this file's vision tower and projector, checked against
        each other (widths, special tokens) before any tensor data is read."""
        try:
            return self._model_config(llm_ckpt, tokenizer)
        except FormatError:
            raise
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            raise FormatError(f"{self.path}: malformed vision hyper-parameters ({exc})") from None

    def _model_config(self, llm_ckpt: GGUFCheckpoint, tokenizer) -> ModelConfig:
        llm = llm_ckpt.llm_config()
        v = "clip.vision."
        hidden = self._int_hp(v + "embedding_length")
        proj_dim = self._int_hp(v + "projection_dim", limit=1 << 20)
        if proj_dim != llm.hidden:
            raise FormatError(f"{self.path}: key {v}projection_dim is {proj_dim} but the LLM {llm_ckpt.path.name} has "
                              f"embedding width {llm.hidden}: this mmproj does not belong with that LLM")
        layers = self._int_hp(v + "block_count", limit=MAX_LAYERS)
        self._need(f"v.blk.{layers - 1}.attn_q.weight")
        if self.shape(f"v.blk.{layers}.attn_q.weight") is not None:
            raise FormatError(f"{self.path}: key {v}block_count is {layers} but tensor v.blk.{layers}.attn_q.weight "
                              f"exists")
        image_size = self._int_hp(v + "image_size", limit=1 << 14)
        patch = self._int_hp(v + "patch_size", limit=image_size)
        patch_shape = self._need("v.patch_embd.weight")
        if patch_shape != (hidden, 3, patch, patch):
            raise FormatError(f"{self.path}: tensor v.patch_embd.weight has shape {list(patch_shape)}, the keys "
                              f"{v}embedding_length / {v}patch_size give {[hidden, 3, patch, patch]}")
        swapped = self._swapped_ffn(hidden)
        up = self._need("v.blk.0.ffn_down.weight" if swapped else "v.blk.0.ffn_up.weight")
        intermediate = up[0]
        ff_key = v + "feed_forward_length"
        if ff_key in self.metadata and self._int_hp(ff_key) != intermediate:
            raise FormatError(f"{self.path}: key {ff_key} is {self.metadata[ff_key]} but the MLP tensors are "
                              f"{intermediate} wide")
        heads = self._int_hp(v + "attention.head_count", limit=hidden)
        eps = float(self.metadata.get(v + "attention.layer_norm_epsilon", 1e-6))
        mean, std = self._float_list(v + "image_mean", 3), self._float_list(v + "image_std", 3)
        ids = self._family_tokens(tokenizer, llm_ckpt)
        common = dict(image_size=image_size, patch_size=patch, hidden=hidden, intermediate=intermediate,
                      layers=layers, heads=heads, layer_norm_eps=eps, mean=mean, std=std)
        name, desc = Path(llm_ckpt.path).stem, f"{self.family} from {llm_ckpt.path.name} + {self.path.name}"
        base = dict(name=name, description=desc, llm=llm, family=self.family,
                    sources={"llm": str(llm_ckpt.path), "vision": str(self.path)},
                    processor={"image_token_id": ids[0]})
        cfg = getattr(self, f"_{self.family}")(common, base, llm.hidden)
        self._check_projector_width(cfg, llm_ckpt)
        return cfg

    def _family_tokens(self, tokenizer, llm_ckpt: GGUFCheckpoint) -> list[int]:
        ids = []
        for token in FAMILY_TOKENS[self.family]:
            found = tokenizer.token_to_id(token)
            if found is None:
                raise FormatError(f"{llm_ckpt.path}: the tokenizer has no {token!r} token, which the {self.family} "
                                  f"prompt of {self.path.name} needs: the LLM and the mmproj do not belong together")
            ids.append(int(found))
        return ids

    def _scale_factor(self, default: int) -> int:
        return self._int_hp("clip.vision.projector.scale_factor", default, limit=64)

    def _idefics3(self, common: dict, base: dict, d: int) -> ModelConfig:
        scale = self._scale_factor(2)
        tile = common["image_size"]
        vision = VisionConfig(**common, act="gelu_pytorch_tanh")
        if vision.grid % scale:
            raise FormatError(f"{self.path}: key clip.vision.projector.scale_factor {scale} does not divide the "
                              f"{vision.grid}-patch grid")
        longest = self._int_hp("clip.vision.preproc_image_size", 4 * tile, limit=1 << 14)
        proc = {"longest_edge": longest, "splitting": True, **base["processor"]}
        return ModelConfig(**{**base, "processor": proc}, vision=vision,
                           projector=ProjectorConfig(merge=scale, layer_norm=False, kind="linear", bias=False))

    def _internvl(self, common: dict, base: dict, d: int) -> ModelConfig:
        if self.metadata.get("clip.use_silu"):
            raise FormatError(f"{self.path}: key clip.use_silu: a SiLU InternViT is not supported (GELU only)")
        scale = self._scale_factor(2)
        if scale != 2:
            raise FormatError(f"{self.path}: key clip.vision.projector.scale_factor is {scale}: only InternVL's pixel "
                              f"shuffle 0.5 (2) is supported")
        intern = self.shape("v.class_embd") is not None
        flags = dict(arch="intern_vit", class_token=True, layer_scale=self.shape("v.blk.0.ls1.weight") is not None,
                     norm="layer_norm" if self.shape("v.blk.0.ln1.bias") is not None else "rms_norm",
                     qk_norm=self.shape("v.blk.0.attn_q_norm.weight") is not None) if intern else {}
        vision = VisionConfig(**common, act="gelu", post_layernorm=self.shape("v.post_ln.weight") is not None,
                              qkv_bias=self.shape("v.blk.0.attn_q.bias") is not None, **flags)
        if vision.grid % 2:
            raise FormatError(f"{self.path}: keys clip.vision.image_size/patch_size give an odd {vision.grid}-patch "
                              f"grid, which pixel shuffle cannot halve")
        tile = common["image_size"]
        dynres = {"scheme": "internvl", "tile": tile,
                  "max_num": self._int_hp("clip.vision.preproc_max_tiles", 12, limit=1024),
                  "min_num": self._int_hp("clip.vision.preproc_min_tiles", 1, limit=1024)}
        return ModelConfig(**base, vision=vision, projector=ProjectorConfig(merge=2, layer_norm=True, act="gelu"),
                           dynres=dynres)

    def _llava_onevision(self, common: dict, base: dict, d: int) -> ModelConfig:
        from bluelm_v.models.families.llava_onevision import candidates

        v = "clip.vision."
        layers = common["layers"]
        feature = self.metadata.get(v + "feature_layer", [layers])
        if not isinstance(feature, (list, tuple)) or len(feature) != 1 or not isinstance(feature[0], int) \
                or not 1 <= feature[0] <= layers:
            raise FormatError(f"{self.path}: key {v}feature_layer is {feature!r}: one layer in 1..{layers} is needed")
        flat = self.metadata.get(v + "image_grid_pinpoints")
        if not isinstance(flat, (list, tuple)) or not flat or len(flat) % 2:
            raise FormatError(f"{self.path}: key {v}image_grid_pinpoints is {flat!r}, expected height, width pairs")
        pinpoints = [list(flat[i:i + 2]) for i in range(0, len(flat), 2)]
        tile = common["image_size"]
        ratio = str(self.metadata.get(v + "image_aspect_ratio", "anyres_max_9"))
        m = re.fullmatch(r"anyres_max_(\d+)", ratio)
        if m is None:
            raise FormatError(f"{self.path}: key {v}image_aspect_ratio {ratio!r}: only anyres_max_N is supported")
        vision = VisionConfig(**common, act="gelu" if self.metadata.get("clip.use_gelu") else "gelu_pytorch_tanh",
                              select_layer=feature[0] - 1 - layers, post_layernorm=False)
        self._need("mm.0.weight")
        if self.shape("model.image_newline") is None and self.shape("v.image_newline") is None:
            raise FormatError(f"{self.path}: missing tensor 'model.image_newline' (LLaVA-OneVision's row separator)")
        projector = ProjectorConfig(merge=1, layer_norm=False, act="gelu", bias=self.shape("mm.0.bias") is not None)
        return ModelConfig(**base, vision=vision, projector=projector, image_layout="anyres_unpad",
                           anyres_max_tiles=int(m.group(1)),
                           dynres={"scheme": "llava_next", "tile": tile,
                                   "candidates": candidates(pinpoints, tile, f"{self.path} ({v}image_grid_pinpoints)")})

    def _check_projector_width(self, cfg: ModelConfig, llm_ckpt: GGUFCheckpoint) -> None:
        """The projector's last linear writes the LLM's embedding width, and reads merge^2 x the ViT's width."""
        names = {v: k for k, v in self.canonical_names(cfg).items()}
        last = names.get("mm_projector.linear_2.weight") or names["mm_projector.linear_1.weight"]
        first = names["mm_projector.linear_1.weight"]
        out_w, in_w = self._need(last)[0], self._need(first)[-1]
        if out_w != cfg.llm.hidden:
            raise FormatError(f"{self.path}: tensor {last} writes width {out_w} but the LLM {llm_ckpt.path.name} has "
                              f"embedding width {cfg.llm.hidden}: this mmproj does not belong with that LLM")
        want = cfg.projector.merge ** 2 * cfg.vision.hidden
        if in_w != want:
            raise FormatError(f"{self.path}: tensor {first} reads width {in_w}, the merge of "
                              f"{cfg.projector.merge}x{cfg.projector.merge} ViT tokens of {cfg.vision.hidden} gives {want}")

    # ---- tensors ------------------------------------------------------------------------------------------------
    def canonical_names(self, cfg: ModelConfig) -> dict[str, str]:
        """GGUF name -> our module name, for every tensor of this file the model uses (unused layers beyond the
        selected one and unknown tensors are not listed; assign_state reports what is then missing)."""
        out = {g: ours for g, ours in _GLOBAL_MAP.items() if g in self._tensors}
        out.update({g: ours for g, ours in _PROJECTOR_MAP[self.family].items() if g in self._tensors})
        swapped = self._swapped_ffn(cfg.vision.hidden)
        for i in range(cfg.vision.layers):
            for g, ours in _LAYER_MAP.items():
                if swapped and g in ("ffn_up", "ffn_down"):
                    ours = _LAYER_MAP["ffn_down" if g == "ffn_up" else "ffn_up"]
                for p in ("weight", "bias"):
                    if f"v.blk.{i}.{g}.{p}" in self._tensors:
                        out[f"v.blk.{i}.{g}.{p}"] = f"vision_tower.encoder.layers.{i}.{ours}.{p}"
            for k in (1, 2):
                name = f"v.blk.{i}.ls{k}.weight"
                if name in self._tensors:
                    out[name] = f"vision_tower.encoder.layers.{i}.layer_scale{k}"
        return out

    def state_dict(self, cfg: ModelConfig, module_shapes: dict[str, tuple[int, ...]]) -> dict:
        """Our module name -> float32 torch tensor for the vision tower and projector (dequantized; tensors stored
        with extra unit axes, as InternVL's position table [1, N, C], reshaped to the module's shape)."""
        import torch

        out = {}
        for g, ours in self.canonical_names(cfg).items():
            a = self.dequantize(g, hf_layout=False)
            want = module_shapes.get(ours)
            if want is not None and tuple(a.shape) != tuple(want) and a.size == int(np.prod(want)) \
                    and [s for s in a.shape if s != 1] == [s for s in want if s != 1]:
                a = a.reshape(want)
            out[ours] = torch.from_numpy(np.ascontiguousarray(a))
        if cfg.vision.arch == "siglip" and "vision_tower.post_layernorm.weight" not in out:
            # the SigLIP module always has a final LayerNorm; this model does not apply it (the file has none)
            out["vision_tower.post_layernorm.weight"] = torch.ones(cfg.vision.hidden)
            out["vision_tower.post_layernorm.bias"] = torch.zeros(cfg.vision.hidden)
        return out


def load_pair(llm_path: Path, mmproj_path: Path):
    """(ModelConfig, BlueLMV module, tokenizer) of a GGUF LLM and its mmproj; every check runs on the headers
    before any tensor data is read."""
    import torch

    from bluelm_v.models.checkpoint import assign_state, build
    from bluelm_v.models.vlm import BlueLMV

    if not Path(mmproj_path).is_file():
        raise FileNotFoundError(f"mmproj file not found: {mmproj_path}")
    llm_ckpt = GGUFCheckpoint(llm_path)
    if llm_ckpt.arch == CLIP_ARCH:
        raise FormatError(f"{llm_path}: key general.architecture is 'clip': this is an mmproj, give the LLM GGUF "
                          f"first (LLM.gguf+mmproj.gguf)")
    mm = MmprojCheckpoint(mmproj_path)
    tokenizer = llm_ckpt.tokenizer()
    cfg = mm.model_config(llm_ckpt, tokenizer)
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in BlueLMV(cfg).named_parameters()}
    state = mm.state_dict(cfg, shapes)
    state.update({"language_model." + hf: t for hf, t in llm_ckpt.hf_state_dict(cfg.llm).items()})
    names = {ours: g for g, ours in mm.canonical_names(cfg).items()}
    names.update({"language_model." + hf: g for hf, g in llm_ckpt.hf_names(cfg.llm).items()})
    model = assign_state(build(lambda: BlueLMV(cfg)), state, where=f"{llm_path} + {mmproj_path}", file_names=names)
    return cfg, model, tokenizer


__all__ = ["MmprojCheckpoint", "PROJECTORS", "load_pair", "split_spec"]
