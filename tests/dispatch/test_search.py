"""Threshold search on synthetic objectives whose optimum is known."""

import pytest

from moss_dispatch import ScalePlan, search_thresholds

from ._schedules import INFINITY_1024


def _hinge_objective(target):
    """Quality stays at 1 while every threshold is at or above its target; each point below costs 0.01."""
    calls = []

    def objective(thresholds):
        calls.append(thresholds)
        return 1.0 - 0.01 * sum(max(0.0, t0 - t) for t, t0 in zip(thresholds, target, strict=True))

    return objective, calls


@pytest.mark.parametrize("strategy", ["grid", "binary"])
@pytest.mark.parametrize("target", [(90, 50, 15, 10, 5), (50, 25), (80, 70, 30, 10), (35,)])
def test_finds_the_known_optimum(strategy, target):
    objective, calls = _hinge_objective(target)
    result = search_thresholds(objective, len(target), budget=0.0, step=5, strategy=strategy)
    assert result.thresholds == tuple(float(t) for t in target)
    assert result.score == result.reference_score == 1.0
    assert result.trace[0].thresholds == (100.0,) * len(target) and result.trace[0].accepted
    assert len(calls) == result.evaluations
    # the search respects the invariant it documents: thresholds never increase from coarse to fine
    for step in result.trace:
        assert all(a >= b for a, b in zip(step.thresholds, step.thresholds[1:], strict=False))


def test_binary_search_needs_fewer_evaluations_than_grid():
    target = (90, 50, 15, 10, 5)
    grid = search_thresholds(_hinge_objective(target)[0], 5, budget=0.0, step=1)
    binary = search_thresholds(_hinge_objective(target)[0], 5, budget=0.0, step=1, strategy="binary")
    assert grid.thresholds == binary.thresholds == tuple(float(t) for t in target)
    assert binary.evaluations < grid.evaluations / 3


def test_budget_trades_quality_for_tokens():
    # Each percentile of tokens moved to a coarser scale costs 0.001 quality, so a budget of 0.05 allows exactly
    # 50 points of movement; the top-down order spends it on the finest boundary first.
    def objective(thresholds):
        return 1.0 - 0.001 * sum(100.0 - t for t in thresholds)

    result = search_thresholds(objective, 3, budget=0.05 + 1e-12, step=10)
    assert result.thresholds == (100.0, 100.0, 50.0)
    assert result.score == pytest.approx(0.95)
    rejected = [s for s in result.trace if not s.accepted]
    assert rejected[0].thresholds == (
        100.0,
        100.0,
        40.0,
    )  # the first move past the budget was tried and dropped
    assert result.empty_bands == (0,)  # the coarsest refine scale got no tokens
    plan = ScalePlan(INFINITY_1024, 10, result.thresholds, allow_empty_bands=True)
    assert plan.counts[0] == 0 and plan.counts[1] == round(0.5 * 48 * 48)


def test_explicit_grid_and_trace_boundaries():
    objective, _ = _hinge_objective((60, 20))
    result = search_thresholds(objective, 2, budget=0.0, grid=[80, 60, 40, 20])
    assert result.thresholds == (60.0, 20.0)
    # finest boundary: 80, 60, 40, 20 all keep quality; coarsest: 80 and 60 do, 40 breaks the budget
    assert [s.boundary for s in result.trace] == [-1, 1, 1, 1, 1, 0, 0, 0]
    assert [s.accepted for s in result.trace] == [True, True, True, True, True, True, True, False]
    assert result.trace[-1].thresholds == (40.0, 20.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0, "budget": 0.1}, "k must be a positive int"),
        ({"k": 2, "budget": -1.0}, "budget must be a finite number >= 0"),
        ({"k": 2, "budget": 0.1, "strategy": "bisect"}, "strategy must be 'grid' or 'binary'"),
        ({"k": 2, "budget": 0.1, "step": 0}, r"step must be a number in \(0, 100\)"),
        ({"k": 2, "budget": 0.1, "grid": [50, 100]}, r"grid\[1\] must be a percentile in \(0, 100\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_thresholds(lambda t: 1.0, **kwargs)


def test_non_finite_objective_is_an_error():
    with pytest.raises(ValueError, match="non-finite score"):
        search_thresholds(lambda t: float("nan"), 2, budget=0.1)
