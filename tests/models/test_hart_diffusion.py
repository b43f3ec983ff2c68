"""HART's residual diffusion head: release keys, the respaced schedule, and bit-exact sampling against the official
``DiffLoss.sample`` with the recorded noise.

``fixtures/hart_tiny/diffusion_*`` were made by running mit-han-lab/hart@e28a41f on CPU (see its README):
``DiffLoss(target_channels=8, z_channels=64, depth=2, width=32, num_sampling_steps="8")`` with perturbed weights,
sampled with cfg 2.5 (temperature 1.0 and 0.7) on 6+6 rows, and without guidance (the official ``cfg=1.0``) on 6.
"""

from pathlib import Path

import pytest
import torch

from moss_models.hart.diffusion import HARTDiffusionHead, space_timesteps

FIXTURE = Path(__file__).parent / "fixtures" / "hart_tiny"
N = 6  # conditional rows of the fixture
RUNS = {"cfg": (2.5, 1.0), "cfg_temp": (2.5, 0.7), "nocfg": (None, 1.0)}


def _official_noise(hart_tensors, run: str) -> list[torch.Tensor]:
    # The official draws: x_T (N rows), then randn_like(x) per step on all of x's rows (2N under CFG; only the
    # conditional half reaches the conditional sample), the last one multiplied by zero.
    steps = hart_tensors[f"{run}_noise_steps"]
    return [hart_tensors[f"{run}_noise_init"]] + [step[:N] for step in steps[:-1]]


def test_release_keys_and_shapes_at_the_0_7b_config():
    manifest = []
    for line in (FIXTURE / "diffusion_hart_0.7b_inferred_keys.txt").open():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.rstrip("\n").split("\t")
        manifest.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    with torch.device("meta"):
        model = HARTDiffusionHead(target_channels=32, z_channels=1536, width=1024, depth=6)
    ours = [(f"diffloss.{k}", tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == manifest and len(ours) == 60


def test_respaced_schedule_matches_official_float64_tables(hart_head, hart_tensors):
    assert hart_head.timestep_map == [0, 143, 285, 428, 571, 714, 856, 999]
    assert torch.equal(hart_head._tables64["timestep_map"], hart_tensors["schedule_timestep_map"])
    for name in (
        "betas",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    ):
        assert torch.equal(hart_head._tables64[name], hart_tensors[f"schedule_{name}"]), name
    assert space_timesteps(1000, "10,5") == sorted(set(space_timesteps(1000, "10,5")))
    assert len(space_timesteps(1000, "ddim25")) == 25


@pytest.mark.parametrize("run", sorted(RUNS))
def test_sample_matches_official_with_the_recorded_noise(
    hart_head, hart_tensors, run, two_threads, hart_official
):
    cfg, temperature = RUNS[run]
    z = hart_tensors["z"] if cfg is not None else hart_tensors["z"][:N]
    out = hart_head.sample(z, cfg=cfg, temperature=temperature, noise=_official_noise(hart_tensors, run))
    reference = hart_tensors[f"{run}_sample"][:N]  # HART keeps the first (conditional) half
    assert out.shape == (N, 8) and out.dtype == torch.float32
    hart_official.assert_equal(out, reference, atol=5e-6)
    assert out.abs().max() > 0.1  # not degenerate


def test_official_cfg_one_means_no_guidance(hart_head, hart_tensors, two_threads, hart_official):
    with pytest.warns(UserWarning, match="cfg=1.0 disables guidance"):
        out = hart_head.sample(hart_tensors["z"], cfg=1.0, noise=_official_noise(hart_tensors, "nocfg"))
    hart_official.assert_equal(out, hart_tensors["nocfg_sample"], atol=5e-6)


def test_cfg_as_tensor(hart_head, hart_tensors, two_threads, hart_official):
    noise = _official_noise(hart_tensors, "cfg")
    reference = hart_tensors["cfg_sample"][:N]
    scalar = hart_head.sample(hart_tensors["z"], cfg=torch.tensor(2.5), noise=noise)
    hart_official.assert_equal(scalar, reference, atol=5e-6)
    per_row = hart_head.sample(hart_tensors["z"], cfg=torch.full((N,), 2.5), noise=noise)
    assert torch.equal(per_row, scalar)


def test_generator_seeds_the_sample_and_the_global_rng_is_untouched(hart_head, hart_tensors):
    z = hart_tensors["z"]
    rng_before = torch.random.get_rng_state()
    first = hart_head.sample(z, cfg=2.5, generator=torch.Generator().manual_seed(7))
    again = hart_head.sample(z, cfg=2.5, generator=torch.Generator().manual_seed(7))
    other = hart_head.sample(z, cfg=2.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # the generator's draws are exactly the noise= sequence: x_T, then one (N, Cvae) draw per step t ≥ 1
    gen = torch.Generator().manual_seed(7)
    draws = [torch.randn(N, 8, generator=gen) for _ in range(hart_head.num_steps)]
    assert torch.equal(hart_head.sample(z, cfg=2.5, noise=draws), first)


def test_bad_arguments_are_refused(hart_head, hart_tensors):
    z = hart_tensors["z"]
    with pytest.raises(ValueError, match=r"needs generator= .* or noise="):
        hart_head.sample(z, cfg=2.5)
    with pytest.raises(ValueError, match="noise= must hold 8 tensors"):
        hart_head.sample(z, cfg=2.5, noise=[torch.zeros(N, 8)] * 9)
    with pytest.raises(ValueError, match=r"noise\[0\] must be a \(6, 8\) tensor"):
        hart_head.sample(z, cfg=2.5, noise=[torch.zeros(2 * N, 8)] * 8)
    with pytest.raises(ValueError, match="z must hold 2N rows"):
        hart_head.sample(z[:5], cfg=2.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="num_sampling_steps='eight'"):
        HARTDiffusionHead(8, 64, 32, 2, num_sampling_steps="eight")
