"""matplotlib figures of the ablations (PNG files)."""
from __future__ import annotations

from pathlib import Path

from bluelm_v.ablation.alpha import LABELS, AlphaResult
from bluelm_v.ablation.chunk import PAPER_T128, ChunkResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def alpha_figure(result: AlphaResult, path: Path) -> Path:
    """Four panels against alpha: LLM input tokens, simulated TTFT, share of images upscaled and wasted canvas;
    LLaVA-NeXT and InternVL as horizontal lines."""
    plt = _plt()
    relaxed = [s for s in result.schemes if s.scheme == "bluelm" and s.clause2 == (result.schemes[0].clause2 or "<")]
    relaxed.sort(key=lambda s: s.alpha)
    baselines = [s for s in result.schemes if s.scheme != "bluelm"]
    le0 = [s for s in result.schemes if s.scheme == "bluelm" and s.clause2 == "<=" and s.alpha == 0
           and s not in relaxed]
    alphas = [s.alpha for s in relaxed]
    panels = [("mean_tokens", "mean LLM input tokens"), ("ttft_mean_s", f"mean TTFT on {result.device} (s)"),
              ("upscaled_fraction", "share of images upscaled"), ("wasted_area", "mean wasted canvas (padding)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colors = {LABELS["llava_next"]: "#1f77b4", LABELS["internvl"]: "#d62728"}
    for ax, (key, title) in zip(axes.flat, panels):
        ax.plot(alphas, [getattr(s, key) for s in relaxed], "o-", color="#2ca02c", label="BlueLM-V relaxed (printed <)")
        for b in baselines:
            ax.axhline(getattr(b, key), ls="--", color=colors.get(b.label, "gray"), label=b.label)
        for s in le0:
            ax.plot([0], [getattr(s, key)], "s", color="#9467bd", label='alpha=0 with "<=" (LLaVA-NeXT\'s grids)')
        ax.set_xlabel("alpha")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Relaxed aspect-ratio matching: {result.n} images ({result.source}), {result.grid}x{result.grid} grid",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def patches_figure(result: AlphaResult, path: Path) -> Path:
    """Histogram of tiles per image for each scheme."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    schemes = result.schemes
    width = 0.8 / len(schemes)
    all_p = sorted({p for s in schemes for p in s.patches_histogram})
    for i, s in enumerate(schemes):
        n = sum(s.patches_histogram.values())
        ax.bar([p + (i - len(schemes) / 2) * width for p in all_p],
               [s.patches_histogram.get(p, 0) / n for p in all_p], width=width, label=s.label)
    ax.set_xlabel("tiles per image (local tiles + thumbnail)")
    ax.set_ylabel("share of images")
    ax.set_xticks(all_p)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def chunk_figure(result: ChunkResult, path: Path) -> Path:
    """Simulated prefill (and decode) against the chunk size, with the paper's t128 point."""
    plt = _plt()
    rows = result.rows
    fig, ax = plt.subplots(figsize=(8, 4.8))
    xs = [r.chunk for r in rows]
    ax.plot(xs, [r.prefill_s for r in rows], "o-", color="#1f77b4", label="simulated NPU prefill")
    ax.plot(xs, [r.linear_s + r.overhead_s for r in rows], ":", color="#1f77b4", alpha=0.6,
            label="  of which linear layers + call overheads")
    ax.plot(xs, [r.attention_s for r in rows], "--", color="#1f77b4", alpha=0.6, label="  of which attention")
    measured = [(r.chunk, r.measured_cpu_prefill_s) for r in rows if r.measured_cpu_prefill_s is not None]
    if measured:
        ax.plot(*zip(*measured), "s-", color="#ff7f0e", label="measured CPU prefill (this machine)")
    ax.plot([128], [PAPER_T128["prefill_s"]], "*", ms=14, color="black", label="paper t128 (Table 5)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("prefill chunk t (tokens per NPU call)")
    ax.set_ylabel(f"prefill of {result.prompt_tokens} tokens (s)")
    top = max(r.prefill_s for r in rows if r.chunk >= 16) if any(r.chunk >= 16 for r in rows) else None
    if top:
        ymax = min(top * 1.15, max(r.prefill_s for r in rows) * 1.05)
        ax.set_ylim(0, ymax)
        for r in rows:  # points off the scale (t1 is a decode-speed prefill) get a label at the top
            if r.prefill_s > ymax:
                ax.annotate(f"t{r.chunk}: {r.prefill_s:.0f} s", (r.chunk, ymax * 0.97), ha="center", va="top",
                            fontsize=8)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, [r.decode_tokens_per_s for r in rows], "^-", color="#2ca02c", alpha=0.7, label="simulated decode")
    ax2.plot([128], [PAPER_T128["decode_tokens_per_s"]], "*", ms=10, color="#2ca02c")
    ax2.set_ylabel("decode (tokens/s)")
    ax2.set_ylim(0, max(r.decode_tokens_per_s for r in rows) * 1.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper center")
    ax.set_title(f"Chunked prefill on {result.device}: optimum t{result.best_chunk}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["alpha_figure", "chunk_figure", "patches_figure"]
