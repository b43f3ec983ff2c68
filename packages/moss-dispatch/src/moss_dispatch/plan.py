"""Scale plans: which refine scale handles which tokens.

A :class:`ScalePlan` is the static part of MoSs dispatch. Given a schedule of ``S`` grids, ``S − k`` drafter
scales and ``k`` percentile thresholds (coarsest refine scale first, e.g. ``[90, 50, 15, 10, 5]``), refine scale
``i`` owns the frequency band ``(thresholds[i+1], thresholds[i]]`` (``thresholds[k] = 0``): with ``[50, 25]``
the last scale refines the top 0–25 % highest-frequency tokens and the one before it the 25–50 % band.

Rank and rounding rules (exact, and the same for every image of a batch):

* Each refine scale ranks **its own grid**: the ``(B, H, W)`` score map is area-resized
  (``adaptive_avg_pool2d``) to the scale's ``h×w`` grid, and its ``n = h·w`` positions are sorted by score,
  descending; rank 0 is the highest-frequency token. Ties go to the lower row-major index (stable sort).
* A band ``(lo, hi]`` selects the tokens of rank ``floor(lo·n/100)`` up to, not including,
  ``floor(lo·n/100) + round(width·n/100)`` with ``width = hi − lo``; ``round`` is round-half-up. So a band of
  width ``p %`` on an ``h×w`` grid selects exactly ``round(p/100·h·w)`` tokens, and the ``floor`` start
  guarantees the selection never runs past the grid. The arithmetic is exact (decimal fractions, no float
  rounding): 5 % of 4096 is 204.8 → 205 tokens.

:meth:`ScalePlan.dispatch` applies the plan to a score map and returns a :class:`Dispatch` with every image's
selected positions, each scale's positions sorted in row-major order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F

from moss_dispatch._checks import Grid, check_finite_tensor, check_schedule, check_thresholds
from moss_dispatch.accounting import TokenAccount


def _exact(value: float) -> Fraction:
    # Through the shortest decimal repr, so 12.3 means 123/10 and not the binary float nearest to it.
    return Fraction(repr(float(value)))


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def band_token_count(width_percent: float, num_tokens: int) -> int:
    """Tokens a band of ``width_percent`` selects on a grid of ``num_tokens``: ``round(p/100·n)``, half up."""
    return round_half_up(_exact(width_percent) * num_tokens / 100)


def band_start_rank(lo_percent: float, num_tokens: int) -> int:
    """First rank of a band whose lower percentile is ``lo_percent``: ``floor(lo/100·n)``."""
    return math.floor(_exact(lo_percent) * num_tokens / 100)


@dataclass(frozen=True)
class ScaleSelection:
    """The tokens one refine scale processes, for every image of the batch."""

    scale_index: int  # position of this scale in the full schedule
    grid: Grid
    band: tuple[float, float]  # (lo, hi] percentiles of this scale's own ranking
    flat_index: torch.Tensor  # (B, n) int64, row-major indices into the h×w grid, ascending per image

    @property
    def count(self) -> int:
        return self.flat_index.shape[1]

    @property
    def rows(self) -> torch.Tensor:
        return torch.div(self.flat_index, self.grid[1], rounding_mode="floor")

    @property
    def cols(self) -> torch.Tensor:
        return self.flat_index % self.grid[1]


@dataclass(frozen=True)
class Dispatch:
    """A plan applied to one batch: per refine scale, the selected positions of every image.

    The MoSs stage packs the scales in plan order (coarsest first), each scale's tokens in row-major order;
    :meth:`packed_scale_ids`, :meth:`packed_rows`/:meth:`packed_cols` and :meth:`split` follow that order.
    """

    plan: ScalePlan
    selections: tuple[ScaleSelection, ...]

    @property
    def batch_size(self) -> int:
        return self.selections[0].flat_index.shape[0]

    @property
    def num_tokens(self) -> int:
        return sum(s.count for s in self.selections)

    def packed_scale_ids(self) -> torch.Tensor:
        """``(N,)`` int64: the schedule index of the scale each packed token belongs to."""
        device = self.selections[0].flat_index.device
        return torch.cat(
            [torch.full((s.count,), s.scale_index, dtype=torch.long, device=device) for s in self.selections]
        )

    def packed_rows(self) -> torch.Tensor:
        """``(B, N)`` int64 row of each packed token on its own scale's grid."""
        return torch.cat([s.rows for s in self.selections], dim=1)

    def packed_cols(self) -> torch.Tensor:
        """``(B, N)`` int64 column of each packed token on its own scale's grid."""
        return torch.cat([s.cols for s in self.selections], dim=1)

    @classmethod
    def from_masks(cls, plan: ScalePlan, masks: Sequence[torch.Tensor]) -> Dispatch:
        """An explicit selection: one ``(B, h, w)`` boolean mask per refine scale (coarsest first).

        For oracles and hand-drawn masks. Every image must select the same number of tokens on a scale (the
        packed pass is one rectangular batch); the counts need not follow the plan's bands.
        """
        if len(masks) != plan.k:
            raise ValueError(f"masks has {len(masks)} entries; the plan has k={plan.k} refine scales")
        selections = []
        for i, (mask, scale_index) in enumerate(zip(masks, plan.refine_scales, strict=True)):
            h, w = plan.schedule[scale_index]
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 3:
                raise ValueError(f"masks[{i}] must be a (B, {h}, {w}) bool tensor, got {mask!r:.80}")
            if tuple(mask.shape[1:]) != (h, w):
                raise ValueError(
                    f"masks[{i}] has grid {tuple(mask.shape[1:])}, scale {scale_index} is {(h, w)}"
                )
            counts = mask.flatten(1).sum(1)
            if not bool((counts == counts[0]).all()):
                raise ValueError(f"masks[{i}] selects {counts.tolist()} tokens per image; they must be equal")
            flat = torch.nonzero(mask.flatten(1))[:, 1].reshape(mask.shape[0], -1)  # row-major, ascending
            selections.append(ScaleSelection(scale_index, (h, w), plan.bands[i], flat))
        return cls(plan, tuple(selections))

    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Split a packed ``(B, N, ...)`` tensor into the per-scale pieces ``(B, n_i, ...)``."""
        if packed.ndim < 2 or packed.shape[1] != self.num_tokens or packed.shape[0] != self.batch_size:
            raise ValueError(
                f"packed must have shape (B={self.batch_size}, N={self.num_tokens}, ...), "
                f"got {tuple(packed.shape)}"
            )
        return list(torch.split(packed, [s.count for s in self.selections], dim=1))


@dataclass(frozen=True)
class ScalePlan:
    """Static MoSs dispatch plan: drafter scales, refine bands and exact per-scale token counts.

    Args:
        schedule: the full scale schedule, ``(h, w)`` grids (or Infinity's ``(1, h, w)``), coarse to fine.
        num_draft_scales: how many leading scales the drafter runs unchanged; ``k = S − num_draft_scales``.
        thresholds: ``k`` percentiles in (0, 100], strictly decreasing, coarsest refine scale first.
        allow_empty_bands: accept non-increasing thresholds, where equal neighbours give a refine scale an empty
            band. Off by default (a plan is usually a typo if a scale gets nothing); the threshold search turns
            it on because it starts from "every token at the finest scale".
    """

    schedule: tuple[Grid, ...]
    num_draft_scales: int
    thresholds: tuple[float, ...]
    allow_empty_bands: bool = False
    bands: tuple[tuple[float, float], ...] = field(init=False)
    starts: tuple[int, ...] = field(init=False)
    counts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        grids = tuple(check_schedule(self.schedule))
        n_scales = len(grids)
        nd = self.num_draft_scales
        if not isinstance(nd, int) or isinstance(nd, bool) or not 1 <= nd <= n_scales - 1:
            raise ValueError(
                f"num_draft_scales must be an int in [1, {n_scales - 1}] for a {n_scales}-scale schedule "
                f"(k = S - num_draft_scales refine scales must be fewer than the {n_scales} scales), got {nd!r}"
            )
        k = n_scales - nd
        thresholds = check_thresholds(self.thresholds, k, strict=not self.allow_empty_bands)
        lows = (*thresholds[1:], 0.0)
        bands = tuple(zip(lows, thresholds, strict=True))
        refine = grids[nd:]
        starts = tuple(band_start_rank(lo, h * w) for (lo, _), (h, w) in zip(bands, refine, strict=True))
        counts = tuple(
            round_half_up((_exact(hi) - _exact(lo)) * h * w / 100)
            for (lo, hi), (h, w) in zip(bands, refine, strict=True)
        )
        object.__setattr__(self, "schedule", grids)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "counts", counts)

    @property
    def k(self) -> int:
        return len(self.thresholds)

    @property
    def refine_scales(self) -> tuple[int, ...]:
        """Schedule indices of the refine scales, coarsest first."""
        return tuple(range(self.num_draft_scales, len(self.schedule)))

    @property
    def draft_tokens(self) -> int:
        """Tokens of the drafter's scales; they are also the KV cache the MoSs stage reads."""
        return sum(h * w for h, w in self.schedule[: self.num_draft_scales])

    @property
    def moss_tokens(self) -> int:
        """Tokens the single MoSs forward pass processes (all refine scales packed together)."""
        return sum(self.counts)

    @property
    def kv_tokens(self) -> int:
        return self.draft_tokens

    def account(self) -> TokenAccount:
        """Token accounting: drafter passes one per scale, then one MoSs pass; KV = drafter tokens."""
        per_pass = (*(h * w for h, w in self.schedule[: self.num_draft_scales]), self.moss_tokens)
        return TokenAccount(tokens_per_pass=per_pass, kv_tokens=self.draft_tokens)

    def dispatch(self, scores: torch.Tensor) -> Dispatch:
        """Select every image's tokens for every refine scale from a ``(B, H, W)`` frequency score map."""
        check_finite_tensor(scores, 3, "scores", "(B, H, W)")
        maps = scores.unsqueeze(1).to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
        selections = []
        for scale_index, (lo_hi, start, count) in zip(
            self.refine_scales, zip(self.bands, self.starts, self.counts, strict=True), strict=True
        ):
            h, w = self.schedule[scale_index]
            ranked = F.adaptive_avg_pool2d(maps, (h, w)).flatten(1)  # (B, h·w)
            order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
            chosen = order[:, start : start + count]
            flat_index = torch.sort(chosen, dim=1).values
            selections.append(ScaleSelection(scale_index, (h, w), lo_hi, flat_index))
        return Dispatch(self, tuple(selections))
