"""moss_eval.analysis: Eq. 2 contributions, the drafter/refiner split, Pearson r and the Observation-1 curve."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moss_eval.analysis import (
    HeatmapRow,
    contribution_heatmaps,
    drafter_refiner_contribution,
    excluded_count,
    fidelity_to_final,
    frequency_contribution_correlation,
    frequency_scatter,
    observation1_curve,
    observation1_plot,
    pearson_r,
    stage_additions,
    stage_contributions,
    sum_error,
)

GRIDS = [(1, 1), (2, 2), (4, 4), (8, 8)]


def running_sum_of_upsampled_residuals(seed=0, channels=6, side=8):
    """Running latents as Infinity/VAR keep them: each scale's random codes upsampled to the final grid (VAR-like
    with a per-scale 1×1 mixing as its φ), added to a running sum that starts at zero."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.zeros(channels, side, side, dtype=torch.float64)
    running = []
    for i, (h, w) in enumerate(GRIDS):
        codes = torch.randn(1, channels, h, w, generator=g, dtype=torch.float64)
        up = F.interpolate(codes, size=(side, side), mode="bicubic") if (h, w) != (side, side) else codes
        phi = torch.eye(channels, dtype=torch.float64) + 0.1 * i * torch.randn(
            channels, channels, generator=g, dtype=torch.float64
        )
        latent = latent + torch.einsum("dc,chw->dhw", phi, up[0])
        running.append(latent.clone())
    return torch.stack(running)


def test_contributions_of_a_sum_of_upsampled_residuals_sum_to_one_per_token():
    running = running_sum_of_upsampled_residuals()
    contrib = stage_contributions(running)
    assert contrib.shape == (len(GRIDS), 8, 8)
    assert excluded_count(contrib) == 0
    torch.testing.assert_close(contrib.sum(dim=0), torch.ones(8, 8, dtype=torch.float64), rtol=0, atol=1e-12)
    assert sum_error(contrib) < 1e-12
    # the additions are the per-stage differences and add back to the final latent
    additions = stage_additions(running)
    torch.testing.assert_close(additions.sum(dim=0), running[-1], rtol=0, atol=1e-12)
    # given the additions themselves, the same contributions
    torch.testing.assert_close(stage_contributions(additions, running=False), contrib, rtol=0, atol=1e-12)
    split = drafter_refiner_contribution(contrib, num_drafter=2)
    torch.testing.assert_close(split.drafter_map + split.refiner_map, torch.ones(8, 8, dtype=torch.float64))
    assert split.means["drafter"] + split.means["refiner"] == pytest.approx(1.0, abs=1e-12)
    assert split.means["valid_tokens"] == 64 and split.means["excluded_tokens"] == 0


def test_a_hand_made_case_gives_the_known_projections():
    # final vector (3, 4) at every token, |h_final|² = 25; stage 1 adds (3, 0), stage 2 (0, 4):
    # C¹ = 9/25, C² = 16/25. A nonzero initial latent is subtracted before the first difference.
    initial = torch.full((2, 2, 2), 7.0)
    first = initial + torch.tensor([3.0, 0.0]).view(2, 1, 1)
    second = first + torch.tensor([0.0, 4.0]).view(2, 1, 1)
    final = second - initial
    contrib = stage_contributions(torch.stack([first, second]) - initial)
    assert contrib[:, 0, 0].tolist() == pytest.approx([9 / 25, 16 / 25])
    additions = stage_additions(torch.stack([first, second]), initial=initial)
    assert additions[0, :, 1, 1].tolist() == [3.0, 0.0] and additions[1, :, 1, 1].tolist() == [0.0, 4.0]
    # an addition orthogonal to the final vector contributes 0, an opposite one negatively
    orthogonal = torch.tensor([4.0, -3.0]).view(2, 1, 1).expand(2, 2, 2)
    contrib = stage_contributions(torch.stack([final * 2, orthogonal, -final - orthogonal]), running=False)
    assert contrib[:, 1, 0].tolist() == pytest.approx([2.0, 0.0, -1.0])


def test_near_zero_final_tokens_are_excluded_and_counted():
    running = running_sum_of_upsampled_residuals(seed=1)
    additions = stage_additions(running)
    # token (0, 0): the later stages cancel the first exactly, so its final vector is zero
    additions[-1, :, 0, 0] = -additions[:-1, :, 0, 0].sum(dim=0)
    # token (0, 1): a final vector 1e-6 of the RMS: below the default ratio 1e-3, excluded too
    additions[-1, :, 0, 1] = -additions[:-1, :, 0, 1].sum(dim=0) + 1e-6
    contrib = stage_contributions(additions, running=False)
    assert torch.isnan(contrib[:, 0, 0]).all() and torch.isnan(contrib[:, 0, 1]).all()
    assert excluded_count(contrib) == 2
    split = drafter_refiner_contribution(contrib, 3)
    assert split.means["excluded_tokens"] == 2 and split.means["valid_tokens"] == 62
    assert math.isfinite(split.means["drafter"]) and sum_error(contrib) < 1e-9
    # with no threshold the tiny (nonzero) one is kept, the zero one never divided by
    kept = stage_contributions(additions, running=False, min_norm_ratio=0.0)
    assert excluded_count(kept) == 1 and not torch.isnan(kept[:, 0, 1]).any()
    # an all-zero latent has no valid token at all
    zero = drafter_refiner_contribution(stage_contributions(torch.zeros(3, 2, 4, 4)), 1)
    assert zero.means == {"drafter": None, "refiner": None, "valid_tokens": 0, "excluded_tokens": 16}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\(K, C, H, W\)"):
        stage_contributions(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"num_drafter=4 must be an int in \[1, 3\]"):
        drafter_refiner_contribution(torch.zeros(4, 2, 2), 4)
    with pytest.raises(ValueError, match="NaN"):
        stage_contributions(torch.full((2, 1, 2, 2), math.nan))


def test_pearson_r_matches_numpy_and_handles_undefined_cases():
    g = np.random.default_rng(0)
    x = g.normal(size=500)
    y = 0.4 * x + g.normal(size=500)
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert pearson_r(torch.tensor(x), torch.tensor(-3 * x + 1)) == pytest.approx(-1.0)
    assert pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # a constant side
    assert pearson_r([1.0], [2.0]) is None
    # NaN pairs are left out
    xn, yn = x.copy(), y.copy()
    xn[:10] = np.nan
    assert pearson_r(xn, yn) == pytest.approx(np.corrcoef(x[10:], y[10:])[0, 1], abs=1e-12)


def test_frequency_correlation_per_image_and_pooled():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(8, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    contribs = [
        0.5 * s + 0.3 * torch.rand(8, 8, generator=g, dtype=torch.float64) + i for i, s in enumerate(scores)
    ]
    contribs[1][0, 0] = math.nan  # an excluded token
    out = frequency_contribution_correlation(scores, contribs)
    for i in range(3):
        ok = ~torch.isnan(contribs[i].flatten())
        want = np.corrcoef(scores[i].flatten()[ok].numpy(), contribs[i].flatten()[ok].numpy())[0, 1]
        assert out["per_image"][i] == pytest.approx(want, abs=1e-12)
    x = torch.cat([s.flatten() for s in scores])
    y = torch.cat([c.flatten() for c in contribs])
    ok = ~torch.isnan(y)
    assert out["pooled"] == pytest.approx(np.corrcoef(x[ok].numpy(), y[ok].numpy())[0, 1], abs=1e-12)
    assert out["tokens"] == 3 * 64 - 1
    assert out["per_image_mean"] == pytest.approx(sum(out["per_image"]) / 3)
    with pytest.raises(ValueError, match="different grids"):
        frequency_contribution_correlation([torch.zeros(4, 4)], [torch.zeros(8, 8)])


def test_observation1_curve_and_fidelity_to_final():
    g = torch.Generator().manual_seed(0)
    final = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
    noisy = [(final.int() + torch.randint(-d, d + 1, (16, 16, 3), generator=g)).clamp(0, 255).to(torch.uint8)
             for d in (60, 30, 10)]  # fmt: skip
    psnrs, ssims = fidelity_to_final(torch.stack([*noisy, final]))
    assert psnrs[-1] is None and ssims[-1] == pytest.approx(1.0)
    assert psnrs[0] < psnrs[1] < psnrs[2]  # less noise, closer to the final image
    contrib = stage_contributions(running_sum_of_upsampled_residuals())
    curve = observation1_curve(
        GRIDS,
        [contrib, contrib],
        psnr_db=[psnrs, psnrs],
        ssim_values=[ssims, ssims],
        flops_per_pass=[1, 1, 2, 4],
    )
    assert [p.cumulative_tokens for p in curve] == [1, 5, 21, 85]
    assert curve[-1].token_share == 1.0 and curve[1].flops_share == pytest.approx(2 / 8)
    assert curve[-1].contribution == pytest.approx(1.0) and curve[-1].psnr_db is None
    assert curve[0].contribution == pytest.approx(float(contrib[0].mean()))
    assert curve[2].psnr_db == pytest.approx(psnrs[2]) and curve[2].to_dict()["grid"] == [4, 4]


def test_plots_are_png_files(tmp_path):
    from PIL import Image

    contrib = stage_contributions(running_sum_of_upsampled_residuals())
    contrib[:, 0, 0] = math.nan
    split = drafter_refiner_contribution(contrib, 2)
    row = HeatmapRow("a fox", torch.zeros(32, 32, 3, dtype=torch.uint8), split.drafter_map, split.refiner_map,
                     torch.rand(8, 8))  # fmt: skip
    paths = [
        contribution_heatmaps([row, row], tmp_path / "heat.png", num_drafter=2, num_scales=4),
        frequency_scatter(
            {"variance": (torch.rand(50), torch.rand(50)), "random": (torch.rand(50), torch.rand(50))},
            {"variance": {"pooled": 0.4, "per_image_mean": 0.3}},
            tmp_path / "scatter.png",
        ),
        observation1_plot(observation1_curve(GRIDS, [contrib]), tmp_path / "obs1.png", num_drafter=2),
    ]
    for path in paths:
        with Image.open(path) as im:
            im.verify()
            assert im.format == "PNG"
