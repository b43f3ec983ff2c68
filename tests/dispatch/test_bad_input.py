"""Every bad input raises a ValueError that names the argument and what is allowed."""

import pytest
import torch

from moss_dispatch import ScalePlan, composite, frequency_score, get_scorer

from ._schedules import INFINITY_1024


@pytest.mark.parametrize(
    ("thresholds", "match"),
    [
        ([25, 50], "thresholds must be strictly decreasing"),
        ([50, 50], "thresholds must be strictly decreasing"),
        ([150, 25], r"thresholds\[0\] = 150 is outside \(0, 100\]"),
        ([50, 0], r"thresholds\[1\] = 0 is outside \(0, 100\]"),
        ([50, -5], r"thresholds\[1\] = -5 is outside \(0, 100\]"),
        ([50, float("nan")], r"thresholds\[1\] must be a finite number"),
        ([50, "25"], r"thresholds\[1\] must be a finite number"),
        ([90, 50, 25], "thresholds has 3 entries but there are k=2 refine scales"),
        ([50], "thresholds has 1 entries but there are k=2 refine scales"),
        ("50,25", "thresholds must be a sequence of percentiles"),
    ],
)
def test_malformed_thresholds(thresholds, match):
    with pytest.raises(ValueError, match=match):
        ScalePlan(INFINITY_1024, 11, thresholds)


@pytest.mark.parametrize("num_draft", [0, 13, 20, -1, 2.5, True])
def test_k_must_be_fewer_than_the_scales(num_draft):
    with pytest.raises(ValueError, match=r"num_draft_scales must be an int in \[1, 12\]"):
        ScalePlan(INFINITY_1024, num_draft, [50])


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ([], "schedule must be a non-empty sequence"),
        ([(1, 1), (2, 0)], r"schedule\[1\] must be an \(h, w\) pair of positive ints"),
        ([(1, 1), (2, 2, 2)], r"schedule\[1\] = \(2, 2, 2\): a \(t, h, w\) entry must have t == 1"),
        ([(1, 1), 4], r"schedule\[1\] must be an \(h, w\) pair"),
        ([(1, 1), (2.0, 2)], r"schedule\[1\] must be an \(h, w\) pair of positive ints"),
    ],
)
def test_malformed_schedule(schedule, match):
    with pytest.raises(ValueError, match=match):
        ScalePlan(schedule, 1, [50])


@pytest.mark.parametrize("name", ["variance", "laplacian", "gradient", "fft"])
def test_window_bigger_than_the_map(name):
    with pytest.raises(ValueError, match=r"window=7 is bigger than the 5x6 map"):
        frequency_score(torch.zeros(1, 2, 5, 6), name, window=7)


def test_even_or_non_positive_window():
    with pytest.raises(ValueError, match="window must be odd"):
        frequency_score(torch.zeros(1, 2, 8, 8), "variance", window=4)
    with pytest.raises(ValueError, match="window must be a positive int"):
        frequency_score(torch.zeros(1, 2, 8, 8), "variance", window=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["variance", "fft", "laplacian", "gradient", "random"])
def test_non_finite_latent(bad, name):
    x = torch.zeros(1, 2, 8, 8)
    x[0, 1, 3, 3] = bad
    with pytest.raises(ValueError, match="latent contains non-finite values"):
        frequency_score(x, name)


def test_non_finite_scores_and_draft():
    plan = ScalePlan(INFINITY_1024, 11, [50, 25])
    scores = torch.rand(1, 64, 64)
    scores[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"scores contains non-finite values \(1 NaN, 0 inf\)"):
        plan.dispatch(scores)
    d = plan.dispatch(torch.rand(1, 64, 64))
    draft = torch.zeros(1, 2, 64, 64)
    draft[..., 5] = float("inf")
    with pytest.raises(ValueError, match="draft contains non-finite values"):
        composite(draft, d, torch.zeros(1, plan.moss_tokens, 2))


def test_wrong_tensor_shapes():
    with pytest.raises(ValueError, match=r"latent must have shape \(B, C, H, W\)"):
        frequency_score(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"scores must have shape \(B, H, W\)"):
        ScalePlan(INFINITY_1024, 11, [50, 25]).dispatch(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="latent must be a floating-point tensor"):
        frequency_score(torch.zeros(1, 2, 8, 8, dtype=torch.long))


def test_unknown_scorer_and_parameters():
    with pytest.raises(ValueError, match=r"unknown scorer 'wavelet'; choose one of \['fft', 'gradient'"):
        get_scorer("wavelet")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['radius'\] for scorer 'variance'"):
        get_scorer("variance", radius=2)
    with pytest.raises(ValueError, match=r"cutoff must be a number in \(0, sqrt\(2\)\]"):
        frequency_score(torch.zeros(1, 1, 8, 8), "fft", cutoff=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        frequency_score(torch.zeros(1, 1, 8, 8), "random", seed="0")


def test_trusted_values_skip_only_the_value_checks():
    # Inside a generation the latent comes from the model and is checked once afterwards; reading it for a NaN
    # check in every call would synchronise a GPU. Shapes are still checked, and the checks return after.
    from moss_dispatch import trusted_values

    x = torch.zeros(1, 2, 8, 8)
    x[0, 1, 3, 3] = float("nan")
    with trusted_values():
        assert frequency_score(x, "variance").shape == (1, 8, 8)
        with pytest.raises(ValueError, match=r"latent must have shape \(B, C, H, W\)"):
            frequency_score(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="latent contains non-finite values"):
        frequency_score(x, "variance")
