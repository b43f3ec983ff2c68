"""Infinity's dynamic-resolution table."""

import pytest

from moss_models.infinity import ASPECT_RATIOS, get_schedule


def test_fifteen_templates_with_inverses():
    assert len(ASPECT_RATIOS) == 15
    assert ASPECT_RATIOS == (
        0.333,
        0.4,
        0.5,
        0.571,
        0.666,
        0.75,
        0.8,
        1.0,
        1.25,
        1.333,
        1.5,
        1.75,
        2.0,
        2.5,
        3.0,
    )


@pytest.mark.parametrize(
    ("resolution", "scales", "tokens"),
    [(256, 7, 521), (512, 10, 2521), (768, 12, 6425), (1024, 13, 10521), ("1M", 13, 10521)],
)
def test_square_schedules(resolution, scales, tokens):
    sched = get_schedule(resolution, 1.0)
    assert len(sched.grids) == scales and sched.num_tokens == tokens
    assert sched.rope_grid == (64, 64)
    assert sched.grids[:4] == ((1, 1), (2, 2), (4, 4), (6, 6))


@pytest.mark.parametrize(
    ("ratio", "last", "pixels"),
    [
        (0.5, (45, 90), (720, 1440)),
        (0.75, (54, 72), (864, 1152)),
        (1.333, (72, 54), (1152, 864)),
        (2.0, (90, 45), (1440, 720)),
    ],
)
def test_non_square_1m_schedules(ratio, last, pixels):
    sched = get_schedule(1024, ratio)
    assert sched.grids[-1] == last == sched.rope_grid
    assert sched.pixels == pixels


def test_ratios_snap_to_the_nearest_template_and_512_reuses_the_1m_rope_grid():
    assert get_schedule(1024, 0.52).aspect_ratio == 0.5
    sched = get_schedule(512, 2.0)
    assert sched.grids[-1] == (46, 23) and sched.rope_grid == (90, 45)
    assert sched.as_3d()[0] == (1, 1, 1)


def test_bad_resolution_and_ratio():
    with pytest.raises(ValueError, match=r"unsupported resolution 2048 for Infinity; choose one of"):
        get_schedule(2048)
    with pytest.raises(ValueError, match="aspect_ratio must be a positive number"):
        get_schedule(1024, 0)
