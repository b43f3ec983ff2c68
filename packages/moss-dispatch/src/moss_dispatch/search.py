"""Offline threshold search: the paper's top-down heuristic.

Start with every token at the finest scale (all thresholds 100: the finest scale's band is (0, 100] and every
coarser refine scale's band is empty). Then, boundary by boundary from the finest scale's upward, lower the
boundary over a grid of percentiles: each step moves the lowest-frequency tokens of that band down to the next
coarser scale (or, for the coarsest refine scale, back to the draft). A move is kept only while the caller's
objective (a quality score, higher is better) stays within ``budget`` of the all-finest score; the first move
that breaks the budget ends that boundary's search.

``strategy="grid"`` walks the grid downward one step at a time (what the paper calls grid search); ``"binary"``
bisects the grid for the lowest acceptable value, which needs fewer objective calls and is exact when the
objective falls monotonically as tokens move to coarser scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Objective = Callable[[tuple[float, ...]], float]


@dataclass(frozen=True)
class SearchStep:
    """One objective evaluation: which boundary moved, to what, the score and whether the move was kept."""

    boundary: int  # index into the thresholds (0 = coarsest refine scale); -1 for the all-finest reference
    thresholds: tuple[float, ...]
    score: float
    accepted: bool


@dataclass(frozen=True)
class ThresholdSearchResult:
    thresholds: tuple[float, ...]  # non-increasing; equal neighbours mean the coarser scale got no tokens
    score: float  # objective at ``thresholds``
    reference_score: float  # objective with every token at the finest scale
    budget: float
    trace: tuple[SearchStep, ...] = field(repr=False)

    @property
    def evaluations(self) -> int:
        return len(self.trace)

    @property
    def empty_bands(self) -> tuple[int, ...]:
        """Indices of refine scales the search gave no tokens to."""
        t = self.thresholds
        return tuple(i for i in range(len(t) - 1) if t[i] == t[i + 1])


def search_thresholds(
    objective: Objective,
    k: int,
    *,
    budget: float,
    step: float = 5.0,
    grid: Sequence[float] | None = None,
    strategy: str = "grid",
) -> ThresholdSearchResult:
    """Find MoSs thresholds for ``k`` refine scales by the top-down heuristic.

    Args:
        objective: ``f(thresholds) -> score`` (higher is better), called with a tuple of ``k`` non-increasing
            percentiles, coarsest refine scale first. Equal neighbours mean an empty band; build the plan with
            ``ScalePlan(..., allow_empty_bands=True)``.
        k: number of refine scales.
        budget: the largest allowed drop below the all-finest score (absolute, in the objective's units).
        step: spacing of the default grid ``step, 2·step, …`` below 100.
        grid: explicit candidate percentiles in (0, 100) instead of the step grid.
        strategy: ``"grid"`` (linear, stop at the first failing move) or ``"binary"`` (bisection).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if (
        not isinstance(budget, int | float)
        or isinstance(budget, bool)
        or not math.isfinite(budget)
        or budget < 0
    ):
        raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
    if strategy not in ("grid", "binary"):
        raise ValueError(f"strategy must be 'grid' or 'binary', got {strategy!r}")
    candidates = _candidates(step, grid)

    trace: list[SearchStep] = []

    def evaluate(boundary: int, thresholds: list[float]) -> float:
        score = float(objective(tuple(thresholds)))
        if not math.isfinite(score):
            raise ValueError(f"objective returned a non-finite score {score!r} for thresholds {thresholds}")
        trace.append(SearchStep(boundary, tuple(thresholds), score, False))
        return score

    def mark_accepted() -> None:
        last = trace[-1]
        trace[-1] = SearchStep(last.boundary, last.thresholds, last.score, True)

    current = [100.0] * k
    reference = evaluate(-1, current)
    mark_accepted()
    floor_score = reference - budget
    best_score = reference

    for boundary in range(k - 1, -1, -1):
        lower_limit = current[boundary + 1] if boundary + 1 < k else 0.0
        options = [v for v in candidates if lower_limit < v < current[boundary]]  # descending
        if strategy == "grid":
            for value in options:
                trial = [*current[:boundary], value, *current[boundary + 1 :]]
                score = evaluate(boundary, trial)
                if score < floor_score:
                    break
                mark_accepted()
                current, best_score = trial, score
        else:
            lo, hi = 0, len(options) - 1  # find the last (lowest) acceptable option
            found = None
            while lo <= hi:
                mid = (lo + hi) // 2
                trial = [*current[:boundary], options[mid], *current[boundary + 1 :]]
                score = evaluate(boundary, trial)
                if score >= floor_score:
                    mark_accepted()
                    found = (trial, score)
                    lo = mid + 1
                else:
                    hi = mid - 1
            if found is not None:
                current, best_score = found
    return ThresholdSearchResult(tuple(current), best_score, reference, float(budget), tuple(trace))


def _candidates(step: float, grid: Sequence[float] | None) -> list[float]:
    if grid is None:
        if not isinstance(step, int | float) or isinstance(step, bool) or not 0 < step < 100:
            raise ValueError(f"step must be a number in (0, 100), got {step!r}")
        n = math.ceil(100 / step) - 1
        values = [round(100 - i * step, 10) for i in range(1, n + 1)]
        values = [v for v in values if v > 0]
    else:
        values = []
        for i, v in enumerate(grid):
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 100:
                raise ValueError(f"grid[{i}] must be a percentile in (0, 100), got {v!r}")
            values.append(float(v))
    if not values:
        raise ValueError("the candidate grid is empty")
    return sorted(set(values), reverse=True)
