"""ScalePlan counts, rank rule, selections, and explicit selections from masks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from moss_dispatch import (
    Dispatch,
    ScalePlan,
    band_start_rank,
    band_token_count,
    baseline_account,
)

from ._schedules import HART_1024, INFINITY_1024, paper_plan

# Per-scale counts derived by hand from the rule round_half_up(width% · h·w): e.g. k5's finest scale gets
# 5 % of 64² = 204.8 -> 205 tokens and its 24² scale 40 % of 576 = 230.4 -> 230.
INFINITY_EXPECTED = {
    "k2": {"grids": [48, 64], "counts": [576, 1024], "draft_tokens": 4121},
    "k3": {"grids": [40, 48, 64], "counts": [560, 230, 205], "draft_tokens": 2521},
    "k4": {"grids": [32, 40, 48, 64], "counts": [102, 640, 461, 410], "draft_tokens": 1497},
    "k5": {"grids": [24, 32, 40, 48, 64], "counts": [230, 358, 80, 115, 205], "draft_tokens": 921},
}


@pytest.mark.parametrize("name", sorted(INFINITY_EXPECTED))
def test_infinity_1024_counts(name):
    plan = paper_plan(name)
    exp = INFINITY_EXPECTED[name]
    assert plan.k == len(exp["counts"])
    assert plan.num_draft_scales == 13 - plan.k
    assert [plan.schedule[i][0] for i in plan.refine_scales] == exp["grids"]
    assert list(plan.counts) == exp["counts"]
    assert plan.moss_tokens == sum(exp["counts"])
    assert plan.draft_tokens == plan.kv_tokens == exp["draft_tokens"]
    account = plan.account()
    assert account.forward_passes == plan.num_draft_scales + 1
    assert account.tokens_processed == exp["draft_tokens"] + sum(exp["counts"])
    assert account.kv_tokens == exp["draft_tokens"]


def test_infinity_1024_baseline_accounting():
    account = baseline_account(INFINITY_1024)
    assert account.tokens_processed == 10521
    assert account.kv_tokens == 6425
    assert account.forward_passes == 13


def test_hart_k2_counts():
    plan = ScalePlan(HART_1024, 12, (80, 55))  # the paper's HART k2
    assert [plan.schedule[i] for i in plan.refine_scales] == [(48, 48), (64, 64)]
    assert plan.bands == ((55.0, 80.0), (0.0, 55.0))
    # 25 % of 48² = 576; 55 % of 64² = 2252.8 -> 2253
    assert plan.counts == (576, 2253)
    assert plan.draft_tokens == sum(s * s for s in (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36))


def test_dispatch_from_masks_is_the_scorer_dispatch_when_given_its_masks():
    plan = paper_plan("k3")
    scores = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(0))
    chosen = plan.dispatch(scores)
    masks = []
    for sel in chosen.selections:
        m = torch.zeros(2, sel.grid[0] * sel.grid[1], dtype=torch.bool)
        m.scatter_(1, sel.flat_index, True)
        masks.append(m.view(2, *sel.grid))
    again = Dispatch.from_masks(plan, masks)
    for a, b in zip(chosen.selections, again.selections, strict=True):
        assert (a.scale_index, a.grid, a.band) == (b.scale_index, b.grid, b.band)
        assert torch.equal(a.flat_index, b.flat_index)
    uneven = [m.clone() for m in masks]
    uneven[0][0, 0, 0] = not bool(uneven[0][0, 0, 0])
    with pytest.raises(ValueError, match="tokens per image; they must be equal"):
        Dispatch.from_masks(plan, uneven)
    with pytest.raises(ValueError, match="the plan has k=3 refine scales"):
        Dispatch.from_masks(plan, masks[:2])


def test_bands_follow_the_papers_reading():
    # [50, 25]: the last scale gets the top 0-25 %, the one before it 25-50 %.
    plan = ScalePlan(INFINITY_1024, 11, [50, 25])
    assert plan.bands == ((25.0, 50.0), (0.0, 25.0))
    assert plan.starts == (576, 0)  # floor(25 % of 48²) ranks are skipped at 48²


def test_rounding_rule_is_exact_half_up():
    assert band_token_count(5, 4096) == 205  # 204.8
    assert band_token_count(40, 576) == 230  # 230.4
    assert band_token_count(50, 1) == 1  # 0.5 rounds up
    assert band_token_count(12.5, 4) == 1  # 0.5 rounds up, computed exactly
    assert band_token_count(0.1, 5) == 0  # 0.005
    assert band_token_count(30, 10) == 3  # 0.3·10 is exactly 3 (no float 2.9999…)
    assert band_start_rank(15, 1024) == 153  # floor(153.6)
    assert band_start_rank(70, 10) == 7


def _naive_selection(scores: torch.Tensor, grid, start: int, count: int):
    """Area-resize by explicit block means when divisible, rank with numpy (stable), take the band."""
    b, big_h, big_w = scores.shape
    h, w = grid
    if big_h % h == 0 and big_w % w == 0:
        fh, fw = big_h // h, big_w // w
        resized = scores.double().view(b, h, fh, w, fw).mean(dim=(2, 4)).reshape(b, -1).numpy()
    else:
        resized = F.adaptive_avg_pool2d(scores.double()[:, None], grid).reshape(b, -1).numpy()
    out = []
    for n in range(b):
        order = np.argsort(-resized[n], kind="stable")
        out.append(sorted(order[start : start + count].tolist()))
    return out


@pytest.mark.parametrize("name", sorted(INFINITY_EXPECTED))
def test_dispatch_selects_each_scales_band(name):
    plan = paper_plan(name)
    scores = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    d = plan.dispatch(scores)
    assert d.batch_size == 3
    assert d.num_tokens == plan.moss_tokens
    for sel, start, count in zip(d.selections, plan.starts, plan.counts, strict=True):
        assert sel.flat_index.shape == (3, count)
        assert sel.flat_index.dtype == torch.long
        assert sel.flat_index.tolist() == _naive_selection(scores, sel.grid, start, count)
        h, w = sel.grid
        assert torch.equal(sel.rows * w + sel.cols, sel.flat_index)
        assert bool((sel.rows < h).all()) and bool((sel.cols < w).all())


def test_finest_scale_takes_the_highest_scores():
    plan = ScalePlan(INFINITY_1024, 11, [50, 25])
    scores = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(0))
    finest = plan.dispatch(scores).selections[-1]
    for n in range(2):
        chosen = scores[n].flatten()[finest.flat_index[n]]
        rest = torch.ones(64 * 64, dtype=torch.bool)
        rest[finest.flat_index[n]] = False
        assert chosen.min() >= scores[n].flatten()[rest].max()


def test_ties_go_to_the_lower_row_major_index():
    plan = ScalePlan([(1, 1), (4, 4), (8, 8)], 1, [50, 25])
    d = plan.dispatch(torch.zeros(2, 8, 8))
    # every score ties: ranks follow the flat index, so a band is a contiguous run starting at its start rank
    assert d.selections[0].flat_index.tolist() == [[4, 5, 6, 7]] * 2  # 25-50 % of 16: ranks 4..7
    assert d.selections[1].flat_index.tolist() == [list(range(16))] * 2  # top 25 % of 64


def test_dispatch_is_deterministic_and_scale_map_resolution_free():
    plan = paper_plan("k3")
    scores = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = plan.dispatch(scores), plan.dispatch(scores.clone())
    for sa, sb in zip(a.selections, b.selections, strict=True):
        assert torch.equal(sa.flat_index, sb.flat_index)
    low_res = plan.dispatch(torch.rand(2, 16, 16))  # any map resolution is area-resized per scale
    assert [s.count for s in low_res.selections] == list(plan.counts)


def test_k1_band_100_selects_every_token():
    plan = ScalePlan(INFINITY_1024, 12, [100])
    d = plan.dispatch(torch.rand(2, 64, 64))
    assert d.selections[0].flat_index.tolist() == [list(range(4096))] * 2
    assert plan.account().tokens_processed == baseline_account(INFINITY_1024).tokens_processed


def test_packing_order_and_split():
    plan = paper_plan("k5")
    d = plan.dispatch(torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(3)))
    ids = d.packed_scale_ids()
    assert ids.shape == (988,)
    expected = [i for i, c in zip(plan.refine_scales, plan.counts, strict=True) for _ in range(c)]
    assert ids.tolist() == expected
    rows, cols = d.packed_rows(), d.packed_cols()
    assert rows.shape == cols.shape == (2, 988)
    packed = torch.arange(2 * 988 * 3).view(2, 988, 3)
    pieces = d.split(packed)
    assert [p.shape[1] for p in pieces] == list(plan.counts)
    assert torch.equal(torch.cat(pieces, dim=1), packed)


def test_three_tuple_schedules_are_accepted():
    plan = ScalePlan([(1, h, w) for h, w in INFINITY_1024], 11, [50, 25])
    assert plan.schedule == tuple(INFINITY_1024)


def test_non_square_grids():
    sched = [(1, 1), (2, 4), (3, 6), (6, 12), (9, 18)]
    plan = ScalePlan(sched, 3, [60, 20])
    d = plan.dispatch(torch.rand(2, 9, 18))
    assert plan.counts == (29, 32)  # 40 % of 6·12 = 28.8 -> 29; 20 % of 9·18 = 32.4 -> 32
    assert int(d.selections[1].cols.max()) < 18 and int(d.selections[1].rows.max()) < 9


@st.composite
def _plans(draw):
    n_scales = draw(st.integers(2, 6))
    grids = [(draw(st.integers(1, 12)), draw(st.integers(1, 12))) for _ in range(n_scales)]
    k = draw(st.integers(1, n_scales - 1))
    thresholds = sorted(
        draw(st.lists(st.integers(1, 1000), min_size=k, max_size=k, unique=True)), reverse=True
    )
    batch = draw(st.integers(1, 3))
    return grids, n_scales - k, thresholds, batch, draw(st.integers(0, 2**16))


@settings(max_examples=80, deadline=None)
@given(_plans())
def test_property_selected_tokens_are_unique_and_match_the_band(args):
    grids, num_draft, tenths, batch, seed = args  # thresholds in tenths of a percent, as exact ints
    plan = ScalePlan(grids, num_draft, [t / 10 for t in tenths])
    big = (max(h for h, _ in grids), max(w for _, w in grids))
    scores = torch.rand(batch, *big, generator=torch.Generator().manual_seed(seed))
    d = plan.dispatch(scores)
    lows = [*tenths[1:], 0]
    for sel, hi, lo in zip(d.selections, tenths, lows, strict=True):
        h, w = sel.grid
        n = h * w
        # round_half_up(width/1000 · n) in integer arithmetic
        assert sel.count == (2 * (hi - lo) * n + 1000) // 2000
        assert sel.flat_index.shape == (batch, sel.count)
        for row in sel.flat_index.tolist():
            assert len(set(row)) == len(row)
            assert row == sorted(row)
            assert all(0 <= v < n for v in row)
