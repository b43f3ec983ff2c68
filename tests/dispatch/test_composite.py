"""Composite against a dense reference built with explicit masks."""

import pytest
import torch
import torch.nn.functional as F

from moss_dispatch import INTERPOLATION_MODES, ScalePlan, composite, scatter_to_grid, upsample_to

from ._schedules import INFINITY_1024


def _dense_reference(draft, dispatch, pieces, mode):
    out = draft.clone()
    b, c, big_h, big_w = draft.shape
    for sel, piece in zip(dispatch.selections, pieces, strict=True):
        h, w = sel.grid
        dense = torch.zeros(b, c, h, w, dtype=draft.dtype)
        for n in range(b):
            for t in range(sel.count):
                r, col = int(sel.rows[n, t]), int(sel.cols[n, t])
                dense[n, :, r, col] = piece[n, t]
        if (h, w) != (big_h, big_w):
            if mode == "trilinear":
                dense = F.interpolate(dense[:, :, None], size=(1, big_h, big_w), mode="trilinear")[:, :, 0]
            elif mode in ("bilinear", "bicubic"):
                dense = F.interpolate(dense, size=(big_h, big_w), mode=mode, align_corners=False)
            else:
                dense = F.interpolate(dense, size=(big_h, big_w), mode=mode)
        out = out + dense
    return out


SCHED = [(1, 1), (2, 2), (3, 3), (5, 5), (8, 8), (12, 12)]


@pytest.mark.parametrize("mode", INTERPOLATION_MODES)
@pytest.mark.parametrize("packed", [True, False])
def test_composite_equals_dense_reference(mode, packed):
    g = torch.Generator().manual_seed(0)
    plan = ScalePlan(SCHED, 3, [80, 40, 10])
    draft = torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64)
    d = plan.dispatch(torch.rand(2, 12, 12, generator=g))
    pieces = [torch.randn(2, c, 4, generator=g, dtype=torch.float64) for c in plan.counts]
    residuals = torch.cat(pieces, dim=1) if packed else pieces
    got = composite(draft, d, residuals, mode=mode)
    torch.testing.assert_close(got, _dense_reference(draft, d, pieces, mode), rtol=1e-12, atol=1e-12)


def test_trilinear_equals_bilinear_on_one_frame():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(upsample_to(x, (16, 16), "trilinear"), upsample_to(x, (16, 16), "bilinear"))


def test_k1_band_100_composite_is_the_baselines_last_step_bit_exactly():
    g = torch.Generator().manual_seed(1)
    plan = ScalePlan(INFINITY_1024, 12, [100])
    draft = torch.randn(2, 32, 64, 64, generator=g)
    codes = torch.randn(2, 32, 64, 64, generator=g)
    d = plan.dispatch(torch.rand(2, 64, 64, generator=g))
    packed = codes.flatten(2).transpose(1, 2)  # (B, 4096, C), row-major like the transformer's tokens
    got = composite(draft, d, packed, mode="trilinear")
    assert torch.equal(got, draft + codes)


def test_scatter_to_grid_places_values_and_leaves_zeros():
    values = torch.tensor([[[1.0, 10.0], [2.0, 20.0]]])  # (1, 2, 2)
    out = scatter_to_grid(values, torch.tensor([[5, 0]]), (2, 3))
    expected = torch.zeros(1, 2, 2, 3)
    expected[0, :, 1, 2] = torch.tensor([1.0, 10.0])
    expected[0, :, 0, 0] = torch.tensor([2.0, 20.0])
    assert torch.equal(out, expected)


def test_composite_rejects_mismatched_residuals():
    plan = ScalePlan(SCHED, 4, [50, 10])
    d = plan.dispatch(torch.rand(1, 12, 12))
    draft = torch.zeros(1, 4, 12, 12)
    with pytest.raises(ValueError, match=r"packed must have shape"):
        composite(draft, d, torch.zeros(1, plan.moss_tokens + 1, 4))
    with pytest.raises(ValueError, match=r"residuals\[1\]"):
        composite(draft, d, [torch.zeros(1, plan.counts[0], 4), torch.zeros(1, plan.counts[1], 3)])
    with pytest.raises(ValueError, match="unknown interpolation mode 'cubic'"):
        composite(draft, d, torch.zeros(1, plan.moss_tokens, 4), mode="cubic")
