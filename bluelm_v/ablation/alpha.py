"""The alpha ablation: what BlueLM-V's relaxation alpha does to tokens, upscaling, padding and simulated TTFT over
an image-size distribution, beside LLaVA-NeXT and InternVL on the same grid.

Note (docs/dynamic-resolution.md): under the printed rule (clause 2 with "<") alpha = 0 is *not* LLaVA-NeXT:
it takes the largest canvas holding the whole image. The "<=" variant at alpha = 0 equals LLaVA-NeXT; the sweep
shows it as its own row when alpha 0 is asked for (same grids as LLaVA-NeXT; LLaVA-NeXT also adds its base image
to 1x1 grids, BlueLM does not).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from bluelm_v import dynres
from bluelm_v.ablation.sizes import SizeSet

LABELS = {"llava_next": "LLaVA-NeXT", "internvl": "InternVL"}


@dataclass(frozen=True)
class SchemeSpec:
    label: str
    scheme: str
    params: dict
    alpha: Optional[float] = None
    clause2: Optional[str] = None


@dataclass
class SchemeStats:
    label: str
    scheme: str
    alpha: Optional[float]
    clause2: Optional[str]
    mean_patches: float
    mean_image_tokens: float
    mean_tokens: float  # LLM input: image tokens plus the text
    upscale_geomean: float  # linear scale of the content against the original (geometric mean)
    upscaled_fraction: float  # share of images enlarged (content area > original area)
    wasted_area: float  # mean share of the canvas that is padding
    area_ratio_geomean: float  # canvas area / image area
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    encode_mean_s: float
    prefill_mean_s: float
    fewer_than_llava_next: int  # images given fewer local tiles than LLaVA-NeXT on the same grid
    more_than_llava_next: int
    patches_histogram: dict[int, int] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class AlphaResult:
    source: str
    n: int
    model: str
    device: str
    grid: int
    text_tokens: int
    schemes: list[SchemeStats]
    note: str = ("alpha = 0 under the printed rule is not LLaVA-NeXT (docs/dynamic-resolution.md); the '<=' "
                 "variant at alpha = 0 picks LLaVA-NeXT's grids (its tokens differ only by LLaVA-NeXT's thumbnail "
                 "on 1x1 grids)")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self):
        """One row per scheme (its scalar statistics) as a pandas DataFrame, indexed by the scheme's label."""
        import pandas as pd

        rows = [{k: v for k, v in asdict(s).items() if not isinstance(v, dict)} for s in self.schemes]
        return pd.DataFrame.from_records(rows).set_index("label")


def scheme_specs(alphas: list[float], grid: int, clause2: str = "<") -> list[SchemeSpec]:
    """Relaxed matching at each alpha, the "<=" variant at alpha 0 when 0 is asked for, and the two baselines."""
    if clause2 not in ("<", "<="):
        raise ValueError(f"clause2 must be '<' or '<=', got {clause2!r}")
    if not alphas:
        raise ValueError("give at least one alpha")
    for a in alphas:
        if not (0.0 <= a < 1.0):
            raise ValueError(f"alpha must be in [0, 1), got {a}")
    base = dict(dynres.grid_params("bluelm", grid), thumbnail="if_multi", layout="fit_pad")
    specs = [SchemeSpec(f"relaxed a={a:g}" + ("" if clause2 == "<" else " (<=)"), "bluelm",
                        dict(base, alpha=a, clause2=clause2), a, clause2) for a in sorted(set(alphas))]
    if clause2 == "<" and 0.0 in alphas:
        specs.insert(1, SchemeSpec("relaxed a=0 (<=)", "bluelm", dict(base, alpha=0.0, clause2="<="), 0.0, "<="))
    specs.append(SchemeSpec(LABELS["llava_next"], "llava_next",
                            dict(dynres.grid_params("llava_next", grid), thumbnail="always", layout="fit_pad")))
    specs.append(SchemeSpec(LABELS["internvl"], "internvl",
                            dict(dynres.grid_params("internvl", grid), thumbnail="if_multi", layout="stretch")))
    return specs


def ttft_table(max_patches: int, model, device, text_tokens: int) -> dict[int, tuple[float, float, float]]:
    """(TTFT, encode, prefill) seconds per patch count: a request's latency depends on its tile count only
    (preprocessing is modelled at the tile count; it is under 1% of the encode time)."""
    from bluelm_v.sim import simulate

    out = {}
    for p in range(1, max_patches + 1):
        b = simulate(model, device, p, text_tokens=text_tokens)
        out[p] = (b.ttft_s, b.encode_s, b.prefill_s)
    return out


def scheme_stats(spec: SchemeSpec, sizes: SizeSet, plans: dict, llava_local: np.ndarray, lat: dict,
                 tokens_per_tile: int, text_tokens: int) -> SchemeStats:
    """Statistics of one scheme. plans: dynres.plan_batch output, int64 arrays [n] per field; llava_local: [n]
    local tiles LLaVA-NeXT gives each image; lat: patch count -> (TTFT, encode, prefill) seconds."""
    w = sizes.widths.astype(float)
    h = sizes.heights.astype(float)
    patches = plans["patches"]
    content = plans["content_w"].astype(float) * plans["content_h"]
    canvas = plans["canvas_w"].astype(float) * plans["canvas_h"]
    scale = np.sqrt(content / (w * h))
    table = np.zeros((max(lat) + 1, 3))
    for p, v in lat.items():
        table[p] = v
    ttft, encode, prefill = table[patches].T
    image_tokens = patches * tokens_per_tile
    local = plans["local_patches"]
    by_kind = {}
    for kind in sorted(set(sizes.kinds.tolist()) - {""}):
        m = sizes.kinds == kind
        by_kind[kind] = {"n": int(m.sum()), "mean_tokens": float(image_tokens[m].mean() + text_tokens),
                         "ttft_mean_s": float(ttft[m].mean()), "upscaled_fraction": float((scale[m] > 1).mean())}
    values, counts = np.unique(patches, return_counts=True)
    return SchemeStats(
        label=spec.label, scheme=spec.scheme, alpha=spec.alpha, clause2=spec.clause2,
        mean_patches=float(patches.mean()), mean_image_tokens=float(image_tokens.mean()),
        mean_tokens=float(image_tokens.mean() + text_tokens), upscale_geomean=float(np.exp(np.log(scale).mean())),
        upscaled_fraction=float((scale > 1.0 + 1e-12).mean()), wasted_area=float((1.0 - content / canvas).mean()),
        area_ratio_geomean=float(np.exp(np.log(canvas / (w * h)).mean())), ttft_mean_s=float(ttft.mean()),
        ttft_p50_s=float(np.percentile(ttft, 50)), ttft_p90_s=float(np.percentile(ttft, 90)),
        encode_mean_s=float(encode.mean()), prefill_mean_s=float(prefill.mean()),
        fewer_than_llava_next=int((local < llava_local).sum()), more_than_llava_next=int((local > llava_local).sum()),
        patches_histogram={int(v): int(c) for v, c in zip(values, counts)}, by_kind=by_kind,
    )


def alpha_sweep(sizes: SizeSet, alphas=(0.0, 0.05, 0.1, 0.2, 0.5), grid: int = 4, device="dimensity-9300",
                model="bluelm-v-3b", text_tokens: int = 16, clause2: str = "<", progress: bool = False) -> AlphaResult:
    """Each scheme over every size (dynres.plan_batch), then the simulated latency of each image's tile count."""
    from tqdm import tqdm

    from bluelm_v.sim import load_device
    from bluelm_v.sim.simulate import resolve_model

    if grid < 1 or grid > 6:
        raise ValueError(f"grid must be between 1 and 6, got {grid}")
    cfg, work = resolve_model(model)
    if not work.multimodal:
        raise ValueError(f"model {work.name} has no vision tower")
    dev = load_device(device)
    specs = scheme_specs(list(alphas), grid, clause2)
    plans = {}
    for spec in tqdm(specs, desc="planning schemes", unit="scheme", disable=not progress):
        plans[spec.label] = dynres.plan_batch(sizes.widths, sizes.heights, spec.scheme, **spec.params)
    max_p = int(max(p["patches"].max() for p in plans.values()))
    lat = ttft_table(max_p, cfg, dev, text_tokens)
    llava_local = plans[LABELS["llava_next"]]["local_patches"]
    stats = [scheme_stats(s, sizes, plans[s.label], llava_local, lat, work.image_tokens_per_tile, text_tokens)
             for s in tqdm(specs, desc="simulating", unit="scheme", disable=not progress)]
    return AlphaResult(sizes.source, len(sizes), work.name, dev.name, grid, text_tokens, stats)


__all__ = ["AlphaResult", "SchemeSpec", "SchemeStats", "alpha_sweep", "scheme_specs"]
