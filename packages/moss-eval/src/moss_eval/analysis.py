"""The paper's two observations as numbers and plots, from tensors alone (no model, no scorer imported here).

**Contribution (Eq. 2).** For token ``t`` of the final grid and stage ``k``,
``C_t^k = <h_t^k, h_t^final> / |h_t^final|²``. We read ``h^k`` as *stage k's own addition to the final latent*:
the running latent after pass ``k`` minus the running latent after pass ``k − 1`` (zeros, or the family's
initial latent, before the first pass), both on the final latent grid; ``h^final`` is the running latent after
the last pass, the decoder's input. The paper says "token embeddings at stage S_k projected onto the final output
token vector"; its drafter and refiner means, 0.615 + 0.385 = 1, support this reading, because with it the
contributions of all stages sum to exactly 1 for every token: the running latent of Infinity and VAR *is* the sum
of the per-stage additions (each scale's codes upsampled to the final grid; for VAR also passed through that
scale's φ convolution), so ``Σ_k <h^k, h^final> = <h^final, h^final>``. Taking differences of the running latent
handles both families the same way, φ included. A token is a position of the final latent grid (the grid the
dispatcher scores; with Infinity's spatial patchify, 8B only, a transformer token covers 2×2 of them).

A token whose final vector is (nearly) zero has no direction to project on: tokens with
``|h^final| <= min_norm_ratio · RMS_t |h_t^final|`` are excluded (NaN in the maps) and counted, never divided by.

**Drafter and refiner.** The drafter is the first ``num_drafter`` stages, the refiner the rest; a token's drafter
(refiner) contribution is the sum of its stages' contributions, so the two maps add up to 1 wherever defined. The
paper: Infinity-2B, the first 8 of 13 scales, drafter mean 0.615, refiner 0.385 (:data:`PAPER`).

**Frequency against contribution (Fig. 3(e)).** The Pearson correlation between a frequency score map of the
drafted latent and the refiner contribution map, per image and pooled over the tokens of all images. Since the
two contribution maps add up to 1, the correlation with the drafter map is exactly the negative.

**Observation 1 (Fig. 2(a)).** Per number of generated scales ``s``: the cumulative tokens, the fidelity (PSNR,
SSIM) of the image decoded from the running latent after ``s`` scales to the final image, and the cumulative
contribution. The paper plots GenEval there; fidelity to the final image needs no detector and shows the same
saturation.

Plots use matplotlib's object API on an Agg canvas (imported on use; moss-eval itself depends on torch and
torchmetrics alone) and are written atomically as PNG files.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from moss_eval.fidelity import psnr, ssim
from moss_eval.records import atomic_write_bytes

#: The paper's numbers (Infinity-2B at 1024², variance scorer of Eq. 3), for comparison in reports.
PAPER = {
    "drafter_mean": 0.615,
    "refiner_mean": 0.385,
    "frequency_r": 0.447,
    "setting": "Infinity-2B, 1024² (13 scales), drafter = first 8 scales, refiner = last 5, variance scorer (Eq. 3)",
}
#: Tokens whose final vector is shorter than this fraction of the image's RMS token norm are excluded.
DEFAULT_MIN_NORM_RATIO = 1e-3


# ----------------------------------------------------------------------------------------------- contributions


def _check_stack(latents: torch.Tensor, name: str) -> None:
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{name} must be a (K, C, H, W) tensor (one latent per stage), got {got}")
    if latents.shape[0] < 1:
        raise ValueError(f"{name} is empty: no stages")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError(f"{name} has NaN or infinite values")


def stage_additions(running: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
    """Per-stage additions ``h^k = L_k − L_{k−1}`` of running latents ``L_1 … L_K`` ``(K, C, H, W)``.

    ``initial``: the running latent before the first pass, ``(C, H, W)`` (None: zeros, as Infinity and VAR
    start). Computed in float64, so the additions sum back to ``L_K − initial`` to rounding.
    """
    _check_stack(running, "running")
    running = running.to(torch.float64)
    start = (
        torch.zeros_like(running[:1])
        if initial is None
        else initial.to(running).reshape(1, *running.shape[1:])
    )
    return torch.diff(running, dim=0, prepend=start)


def valid_tokens(final: torch.Tensor, min_norm_ratio: float = DEFAULT_MIN_NORM_RATIO) -> torch.Tensor:
    """``(H, W)`` bool: tokens of a final latent ``(C, H, W)`` whose vector is long enough to project on
    (``|h_t| > min_norm_ratio · RMS_t |h_t|``; an all-zero latent has none)."""
    if final.ndim != 3:
        raise ValueError(f"final must be a (C, H, W) latent, got shape {tuple(final.shape)}")
    if not (
        isinstance(min_norm_ratio, int | float) and math.isfinite(min_norm_ratio) and min_norm_ratio >= 0
    ):
        raise ValueError(f"min_norm_ratio must be a finite number >= 0, got {min_norm_ratio!r}")
    sq = final.to(torch.float64).pow(2).sum(dim=0)
    rms_sq = sq.mean()
    return (sq > (min_norm_ratio**2) * rms_sq) & (sq > 0)


def stage_contributions(
    latents: torch.Tensor,
    *,
    running: bool = True,
    initial: torch.Tensor | None = None,
    min_norm_ratio: float = DEFAULT_MIN_NORM_RATIO,
) -> torch.Tensor:
    """Eq. 2 for every stage and token: ``(K, H, W)`` float64, NaN at excluded tokens (see the module doc).

    ``latents``: ``(K, C, H, W)`` on the final latent grid — the running latents after each pass
    (``running=True``, the generator's ``keep=("latents",)``; ``initial`` as in :func:`stage_additions`), or the
    per-stage additions themselves (``running=False``; the final latent is then their sum). ``h^final`` is the last
    running latent. Where the additions sum to it (``initial`` zero), every valid token's contributions sum to 1.
    """
    _check_stack(latents, "latents")
    if running:
        additions = stage_additions(latents, initial)
        final = latents[-1].to(torch.float64)
    else:
        additions = latents.to(torch.float64)
        final = additions.sum(dim=0)
    ok = valid_tokens(final, min_norm_ratio)
    norm_sq = final.pow(2).sum(dim=0)
    projections = (additions * final.unsqueeze(0)).sum(dim=1)  # (K, H, W)
    safe = torch.where(ok, norm_sq, torch.ones_like(norm_sq))  # excluded tokens are never divided by
    return torch.where(ok.unsqueeze(0), projections / safe, torch.full_like(projections, math.nan))


def excluded_count(contributions: torch.Tensor) -> int:
    """Tokens of a ``(K, H, W)`` or ``(H, W)`` contribution map left out for a near-zero final vector (NaN)."""
    maps = contributions if contributions.ndim == 2 else contributions[0]
    return int(torch.isnan(maps).sum())


class DrafterRefiner(NamedTuple):
    """The drafter's and refiner's per-token contribution maps ``(H, W)`` (NaN at excluded tokens) and their
    means over the valid tokens: ``means = {"drafter", "refiner", "valid_tokens", "excluded_tokens"}`` (the
    means are None when no token is valid)."""

    drafter_map: torch.Tensor
    refiner_map: torch.Tensor
    means: dict[str, Any]


def drafter_refiner_contribution(contributions: torch.Tensor, num_drafter: int) -> DrafterRefiner:
    """Split ``(K, H, W)`` stage contributions into the first ``num_drafter`` stages and the rest."""
    if contributions.ndim != 3:
        raise ValueError(f"contributions must be (K, H, W), got shape {tuple(contributions.shape)}")
    k = contributions.shape[0]
    if not isinstance(num_drafter, int) or isinstance(num_drafter, bool) or not 1 <= num_drafter < k:
        raise ValueError(
            f"num_drafter={num_drafter!r} must be an int in [1, {k - 1}]: the drafter and the refiner each need "
            f"at least one of the {k} stages"
        )
    drafter = contributions[:num_drafter].sum(
        dim=0
    )  # NaN stays NaN: an excluded token is excluded in all stages
    refiner = contributions[num_drafter:].sum(dim=0)
    ok = ~torch.isnan(drafter)
    n = int(ok.sum())
    means = {
        "drafter": float(drafter[ok].mean()) if n else None,
        "refiner": float(refiner[ok].mean()) if n else None,
        "valid_tokens": n,
        "excluded_tokens": int(ok.numel() - n),
    }
    return DrafterRefiner(drafter, refiner, means)


def sum_error(contributions: torch.Tensor) -> float | None:
    """The largest ``|Σ_k C_t^k − 1|`` over valid tokens (0 up to rounding when the additions sum to the final
    latent); None when no token is valid."""
    total = contributions.sum(dim=0)
    ok = ~torch.isnan(total)
    return float((total[ok] - 1).abs().max()) if bool(ok.any()) else None


# ----------------------------------------------------------------------------------------------- correlation


def pearson_r(x: Any, y: Any) -> float | None:
    """Pearson's r of two equally shaped arrays, flattened, in float64, over the pairs where both are finite.

    None when it is undefined: fewer than two pairs, or either side constant.
    """
    x, y = (
        torch.as_tensor(x, dtype=torch.float64).flatten(),
        torch.as_tensor(y, dtype=torch.float64).flatten(),
    )
    if x.shape != y.shape:
        raise ValueError(f"pearson_r needs equally many values, got {x.numel()} and {y.numel()}")
    ok = torch.isfinite(x) & torch.isfinite(y)
    x, y = x[ok], y[ok]
    if x.numel() < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = dx.pow(2).sum().sqrt(), dy.pow(2).sum().sqrt()
    if float(sx) == 0 or float(sy) == 0:
        return None
    return float(((dx * dy).sum() / (sx * sy)).clamp(-1.0, 1.0))


def frequency_contribution_correlation(
    score_maps: Sequence[torch.Tensor], contribution_maps: Sequence[torch.Tensor]
) -> dict[str, Any]:
    """Pearson r of frequency scores against contributions, per image and pooled over all images' tokens.

    ``score_maps`` / ``contribution_maps``: one ``(H, W)`` map per image, on the same grid (NaN contributions,
    excluded tokens, are left out). Returns ``{"per_image": [r…], "per_image_mean", "per_image_median",
    "pooled", "tokens"}`` (an undefined r is None and left out of the mean and median). The pooled r weighs
    every token equally; the per-image r is what a single figure such as the paper's Fig. 3(e) shows.
    """
    if len(score_maps) != len(contribution_maps) or not score_maps:
        raise ValueError(
            f"need one score map per contribution map, got {len(score_maps)} and {len(contribution_maps)}"
        )
    xs, ys, per_image = [], [], []
    for i, (s, c) in enumerate(zip(score_maps, contribution_maps, strict=True)):
        if tuple(s.shape) != tuple(c.shape):
            raise ValueError(
                f"image {i}: score map {tuple(s.shape)} and contribution map {tuple(c.shape)} are on different grids"
            )
        s, c = s.detach().cpu().to(torch.float64).flatten(), c.detach().cpu().to(torch.float64).flatten()
        per_image.append(pearson_r(s, c))
        ok = torch.isfinite(s) & torch.isfinite(c)
        xs.append(s[ok])
        ys.append(c[ok])
    defined = [r for r in per_image if r is not None]
    pooled_x, pooled_y = torch.cat(xs), torch.cat(ys)
    return {
        "per_image": per_image,
        "per_image_mean": statistics.fmean(defined) if defined else None,
        "per_image_median": statistics.median(defined) if defined else None,
        "pooled": pearson_r(pooled_x, pooled_y),
        "tokens": int(pooled_x.numel()),
    }


# ----------------------------------------------------------------------------------------------- observation 1


def fidelity_to_final(images: torch.Tensor) -> tuple[list[float | None], list[float]]:
    """PSNR (dB) and SSIM of each of ``K`` images ``(K, H, W, 3)`` uint8 against the last one.

    An image identical to the last (the last itself) has PSNR None (infinite) and SSIM 1."""
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (K, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    final = images[-1]
    psnrs: list[float | None] = []
    ssims: list[float] = []
    for image in images:
        value = psnr(image, final)
        psnrs.append(value if math.isfinite(value) else None)
        ssims.append(ssim(image, final))
    return psnrs, ssims


@dataclass(frozen=True)
class CurvePoint:
    """One point of the Observation-1 curve: after ``scales`` generated scales."""

    scales: int
    grid: tuple[int, int]
    tokens: int  # this scale's tokens (one image, one CFG branch)
    cumulative_tokens: int
    token_share: float  # cumulative tokens / all tokens
    flops_share: float | None  # cumulative backbone FLOPs / all (None when not counted)
    psnr_db: float | None  # mean over images of the PSNR to the final image (None: identical, infinite)
    ssim: float | None
    contribution: float | None  # mean over valid tokens of Σ_{k<=s} C^k (1 at s = K)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _mean_defined(values: Sequence[float | None]) -> float | None:
    """The mean of the defined values; None if any is None (an infinite PSNR makes the mean infinite)."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)  # type: ignore[arg-type]


def observation1_curve(
    grids: Sequence[Sequence[int]],
    contributions: Sequence[torch.Tensor],
    *,
    psnr_db: Sequence[Sequence[float | None]] | None = None,
    ssim_values: Sequence[Sequence[float]] | None = None,
    flops_per_pass: Sequence[int] | None = None,
) -> list[CurvePoint]:
    """The Observation-1 curve over ``s = 1 … K``.

    ``grids``: the ``K`` scale grids; ``contributions``: each image's ``(K, H, W)`` stage contributions;
    ``psnr_db`` / ``ssim_values``: per image, ``K`` values from :func:`fidelity_to_final` (None: not measured);
    ``flops_per_pass``: the backbone FLOPs of each pass (None: not counted). The cumulative contribution is the
    mean over all images' valid tokens.
    """
    k = len(grids)
    tokens = [int(h) * int(w) for h, w in grids]
    total_tokens = sum(tokens)
    for i, c in enumerate(contributions):
        if c.shape[0] != k:
            raise ValueError(f"image {i} has {c.shape[0]} stage contributions for a {k}-scale schedule")
    for name, table in (("psnr_db", psnr_db), ("ssim_values", ssim_values)):
        if table is not None and any(len(row) != k for row in table):
            raise ValueError(f"{name} needs {k} values per image (one per scale)")
    if flops_per_pass is not None and len(flops_per_pass) != k:
        raise ValueError(f"flops_per_pass has {len(flops_per_pass)} values for {k} scales")
    cumulative = [c.cumsum(dim=0) for c in contributions]  # NaN columns stay NaN
    total_flops = sum(flops_per_pass) if flops_per_pass else 0
    points = []
    for s in range(1, k + 1):
        values = torch.cat([c[s - 1].flatten() for c in cumulative]) if cumulative else torch.empty(0)
        values = values[~torch.isnan(values)]
        points.append(
            CurvePoint(
                scales=s,
                grid=(int(grids[s - 1][0]), int(grids[s - 1][1])),
                tokens=tokens[s - 1],
                cumulative_tokens=sum(tokens[:s]),
                token_share=sum(tokens[:s]) / total_tokens,
                flops_share=sum(flops_per_pass[:s]) / total_flops if total_flops else None,
                psnr_db=_mean_defined([row[s - 1] for row in psnr_db]) if psnr_db else None,
                ssim=statistics.fmean(row[s - 1] for row in ssim_values) if ssim_values else None,
                contribution=float(values.mean()) if values.numel() else None,
            )
        )
    return points


# ----------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is in the workspace; this is for lone installs
        raise ImportError("the analysis plots need matplotlib: uv pip install matplotlib") from err
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    out_path = Path(out_path)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="#7f7f7f")  # excluded tokens (NaN) in grey


@dataclass(frozen=True)
class HeatmapRow:
    """One image's row of the Fig. 3(b–d) heatmaps."""

    title: str
    image: torch.Tensor  # (H, W, 3) uint8, the generated image
    drafter_map: torch.Tensor  # (h, w) drafter contribution (NaN: excluded)
    refiner_map: torch.Tensor  # (h, w)
    frequency_map: torch.Tensor  # (h, w) the score map of the drafted latent
    frequency_name: str = "variance"


def contribution_heatmaps(
    rows: Sequence[HeatmapRow], out_path: str | os.PathLike, *, num_drafter: int, num_scales: int
) -> Path:
    """Per image: generated image | drafter contribution | refiner contribution | frequency map (Fig. 3(a–d)).

    The two contribution panels of a row share one colour scale, so lighter means more in both."""
    if not rows:
        raise ValueError("contribution_heatmaps needs at least one row")
    fig = _figure(13.0, 3.2 * len(rows))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, row in enumerate(rows):
        both = torch.cat([row.drafter_map.flatten(), row.refiner_map.flatten()]).to(torch.float64)
        both = both[~torch.isnan(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.numel() else (0.0, 1.0)
        panels = [
            (row.image.cpu().numpy(), None, f"{row.title}"),
            (row.drafter_map, "magma", f"drafter (scales 1–{num_drafter}), mean {_nanmean(row.drafter_map)}"),
            (
                row.refiner_map,
                "magma",
                f"refiner (scales {num_drafter + 1}–{num_scales}), mean {_nanmean(row.refiner_map)}",
            ),
            (row.frequency_map, "viridis", f"frequency: {row.frequency_name} of the draft"),
        ]
        for c, (data, cmap, title) in enumerate(panels):
            ax = axes[r][c]
            if cmap is None:
                ax.imshow(data)
            else:
                values = data.detach().cpu().to(torch.float64).numpy()
                kw = {"vmin": lo, "vmax": hi} if c in (1, 2) else {}
                im = ax.imshow(values, cmap=_cmap(cmap), interpolation="nearest", **kw)
                if (
                    c != 1
                ):  # one colour bar for the two contribution panels (one scale), one for the frequency
                    fig.colorbar(im, ax=list(axes[r][1:3]) if c == 2 else ax, fraction=0.046, pad=0.02)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Per-token contribution (Eq. 2) and frequency (grey: near-zero final token, excluded)")
    return _save(fig, out_path)


def _nanmean(x: torch.Tensor) -> str:
    v = x[~torch.isnan(x)]
    return f"{float(v.mean()):.3f}" if v.numel() else "n/a"


def frequency_scatter(
    points: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    correlations: Mapping[str, Mapping[str, Any]],
    out_path: str | os.PathLike,
) -> Path:
    """One hexbin panel per scorer: frequency score (x) against refiner contribution (y) over all tokens, with
    the pooled and mean per-image r (Fig. 3(e)). ``points[name] = (scores, contributions)``, flat and finite."""
    if not points:
        raise ValueError("frequency_scatter needs at least one scorer")
    n = len(points)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig = _figure(4.6 * cols, 3.9 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, (name, (x, y)) in enumerate(points.items()):
        ax = axes[i // cols][i % cols]
        xv, yv = x.detach().cpu().to(torch.float64).numpy(), y.detach().cpu().to(torch.float64).numpy()
        if xv.size:
            ax.hexbin(xv, yv, gridsize=40, bins="log", mincnt=1, cmap="Blues")
        stats = correlations.get(name, {})
        ax.set_title(
            f"{name}: pooled r = {_fmt(stats.get('pooled'))}, per-image mean r = {_fmt(stats.get('per_image_mean'))}",
            fontsize=9,
        )
        ax.set_xlabel(f"{name} score of the drafted latent")
        ax.set_ylabel("refiner contribution")
        ax.grid(True, alpha=0.3)
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.suptitle(
        "Frequency vs refiner contribution, one point per token (darker: more tokens, log scale); "
        f"paper, variance on Infinity-2B: r = {PAPER['frequency_r']}"
    )
    return _save(fig, out_path)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def observation1_plot(
    curve: Sequence[CurvePoint], out_path: str | os.PathLike, *, num_drafter: int, title: str = ""
) -> Path:
    """Fig. 2(a) with fidelity to the final image for GenEval: cumulative tokens (bars) against PSNR (left
    panel), SSIM and cumulative contribution (right panel), with the drafter/refiner split marked."""
    if not curve:
        raise ValueError("observation1_plot needs at least one point")
    s = [p.scales for p in curve]
    fig = _figure(11.0, 4.2)
    left, right = fig.subplots(1, 2)
    left.bar(s, [p.cumulative_tokens for p in curve], color="#c7d7ea", label="cumulative tokens")
    left.set_xlabel("generated scales")
    left.set_ylabel("cumulative tokens (one image)")
    twin = left.twinx()
    finite = [(p.scales, p.psnr_db) for p in curve if p.psnr_db is not None]
    if finite:
        twin.plot(*zip(*finite, strict=True), "o-", color="C3", label="PSNR to the final image")
    twin.set_ylabel("PSNR to the final image (dB; the last scale is identical)")
    for p in curve:
        if p.psnr_db is None and p.ssim is not None:  # identical to the final image: infinite PSNR
            left.annotate("=final", (p.scales, p.cumulative_tokens), ha="center", va="bottom", fontsize=7)
    handles = [h for ax in (left, twin) for h in ax.get_legend_handles_labels()[0]]
    left.legend(handles=handles, loc="upper left", fontsize=8)
    if any(p.ssim is not None for p in curve):
        right.plot(s, [p.ssim for p in curve], "o-", color="C0", label="SSIM to the final image")
    right.plot(s, [p.contribution for p in curve], "s--", color="C2", label="cumulative contribution (Eq. 2)")
    right.plot(s, [p.token_share for p in curve], ":", color="grey", label="token share")
    if any(p.flops_share is not None for p in curve):
        right.plot(s, [p.flops_share for p in curve], "-.", color="C1", label="FLOPs share")
    right.set_xlabel("generated scales")
    right.set_ylim(-0.05, 1.1)
    right.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.axvline(num_drafter + 0.5, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(s)
        ax.grid(True, alpha=0.3)
    right.text(num_drafter + 0.55, 1.02, "refiner →", fontsize=8)
    right.text(num_drafter + 0.45, 1.02, "← drafter", fontsize=8, ha="right")
    fig.suptitle(title or "Observation 1: quality saturates while tokens grow")
    return _save(fig, out_path)
