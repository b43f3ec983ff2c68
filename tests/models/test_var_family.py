"""VAR as a family of the engine: the official loop end to end through ``NextScaleGenerator.generate`` (the
fixture ``fixtures/var_tiny``, see its README), MoSs, skipping and the peers on VAR, accounting, host reads and
captured passes."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

import moss_models
from moss_models import (
    Baseline,
    CheckpointNotFoundError,
    FasterVAR,
    FastVAR,
    Moss,
    SamplingConfig,
    ScaleSkip,
    dry_run,
    estimate_kv_cache,
)
from moss_models.core.checkpoints import CHECKPOINT_ENV
from moss_models.core.generator import NextScaleGenerator
from moss_models.core.graphs import PassGraphs
from moss_models.core.presets import preset_thresholds
from moss_models.var import VARFamily, get_var_config, get_vqvae_config, load_var_transformer, load_vqvae

FIXTURE = Path(__file__).parent / "fixtures" / "var_tiny"
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
BEGINS = (0, 1, 5, 14, 30, 55, 91, 155, 255, 424, 680)
# the fixture's official call: autoregressive_infer_cfg(B=2, label_B=[207, 980], g_seed=0, cfg=4, top_k=14, top_p=0.95)
OFFICIAL = SamplingConfig(cfg=4.0, top_k=14, top_p=0.95, seeding="official")


def _hot_path_helpers():
    spec = importlib.util.spec_from_file_location("_var_hot_path", Path(__file__).parent / "test_hot_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


def _family(run: str) -> VARFamily:
    config = get_var_config("var_tiny", shared_aln=run == "saln")
    file = "saln" if run == "saln" else "aln"
    transformer = load_var_transformer(config, FIXTURE / f"var_tiny_{file}.safetensors")
    vae = load_vqvae(FIXTURE / "vae_tiny.pth", config=get_vqvae_config(vocab_size=64, ch=4, norm_groups=2))
    return VARFamily(transformer, vae, more_smooth=run == "aln_smooth")


@pytest.fixture(scope="module")
def gens():
    return {run: NextScaleGenerator(_family(run)) for run in ("aln", "saln", "aln_smooth")}


@pytest.fixture(scope="module")
def tiny():
    return moss_models.load("var_tiny")


LABELS = [207, 980]


# ---- the official loop, end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["aln", "saln", "aln_smooth"])
def test_generate_reproduces_the_official_loop(gens, io, run, two_threads, var_official):
    inputs, outputs = io
    labels = inputs["labels"]
    assert labels.tolist() == LABELS
    result = gens[run].generate(labels, [0, 1], sampling=OFFICIAL, keep=("logits", "latents"))
    assert result.stats.tokens_per_pass == [p * p for p in PATCH_NUMS]
    if run != "aln_smooth":  # the fixture keeps the smooth run's raw logits only as a checksum
        logits = torch.cat(result.logits, dim=1)  # (4, 680, 64)
        var_official.assert_equal(logits, outputs[f"{run}_raw_logits"], atol=5e-6)
    if run == "aln_smooth":
        # the smooth run's indices are drawn and discarded (their RNG use is what matters): the pass keeps the
        # soft one-hots, whose codes make f_hat, and every later scale's input and draw depends on both draws
        assert all(s.dtype == torch.float32 and s.shape[-1] == 64 for s in result.samples)
        torch.testing.assert_close(result.samples[0].sum(-1), torch.ones(2, 1))
    else:
        assert torch.equal(torch.cat(result.samples, dim=1), outputs[f"{run}_idx"])
    var_official.assert_equal(result.latent, outputs[f"{run}_f_hat"], atol=1e-3)
    if run in (
        "aln",
        "aln_smooth",
    ):  # next-scale inputs: each pass's f_hat, area-downsampled, official layout
        nxt = torch.cat(
            [
                torch.nn.functional.interpolate(lat, size=(p, p), mode="area").flatten(2).transpose(1, 2)
                for lat, p in zip(result.latents[:-1], PATCH_NUMS[1:], strict=True)
            ],
            dim=1,
        )
        var_official.assert_equal(nxt, outputs[f"{run}_next_inputs"], atol=1e-3)
    if run == "aln":
        # decoded at B = 2 as the fixture was (seeding="official" decodes the batch in one call)
        var_official.assert_equal(result.decoded[0:1], outputs["aln_decoded_img0"], atol=1e-4)
        want = outputs["aln_decoded_img0"].add(1).mul(0.5).permute(0, 2, 3, 1).mul(255).to(torch.uint8)
        var_official.assert_images(result.images[0:1], want)


def test_logits_of_the_first_pass_include_the_null_rows(gens):
    result = gens["aln"].generate(LABELS, [0, 1], sampling=OFFICIAL, keep=("logits",), decode=False)
    assert result.logits[0].shape == (4, 1, 64)  # the official loop mixes at t = 0 too
    off = gens["aln"].generate(
        LABELS, [0, 1], sampling=SamplingConfig(cfg=0.0), keep=("logits",), decode=False
    )
    assert off.logits[0].shape == (2, 1, 64) and off.stats.kv_cache_bytes * 2 == result.stats.kv_cache_bytes


# ---- MoSs, skipping and the peers on VAR ---------------------------------------------------------------------


@pytest.mark.parametrize("seeding", ["official", "per_image"])
@pytest.mark.parametrize("run", ["aln", "aln_smooth"])
def test_moss_k1_band_100_is_the_baseline_bit_for_bit(gens, run, seeding):
    sampling = SamplingConfig(cfg=4.0, top_k=14, top_p=0.95, seeding=seeding)
    base = gens[run].generate(LABELS, [0, 1], sampling=sampling)
    moss = gens[run].generate(LABELS, [0, 1], method=Moss((100.0,)), sampling=sampling)
    assert moss.stats.tokens_per_pass == base.stats.tokens_per_pass
    assert torch.equal(moss.latent, base.latent) and torch.equal(moss.images, base.images)


def test_moss_presets_are_registered_and_pack_the_refine_scales(tiny):
    # the presets are the threshold search's files (on var_tiny's random weights: untuned, and they say so)
    found = moss_models.var.presets.FOUND
    for name in ("k2", "k3"):
        assert preset_thresholds("var", name) == tuple(found[name]["thresholds"])
        assert found[name]["tuned"] is False and found[name]["model"] == "var_tiny"
        assert found[name]["how"]["evaluations"] == len(found[name]["trace"]) > 1
    assert preset_thresholds("var", "k2") == (20.0, 10.0) and preset_thresholds("var", "k3") == (
        30.0,
        20.0,
        10.0,
    )
    assert moss_models.var.presets.UNTUNED
    base = tiny.generate(LABELS, [0, 1])
    k2 = tiny(LABELS, method="k2", seed=0).result
    k3 = tiny(LABELS, method="k3", seed=0).result
    # k2: the band (10, 20] of 13² (17 tokens) and (0, 10] of 16² (26) after the eight drafter scales
    assert k2.stats.tokens_per_pass[:8] == [p * p for p in PATCH_NUMS[:8]]
    assert [s.count for s in k2.dispatch.selections] == [p.count for p in k2.steps[-1].tokens.parts]
    assert k2.stats.tokens_per_pass[-1] == sum(s.count for s in k2.dispatch.selections) == 43
    assert k3.stats.tokens_per_pass == [1, 4, 9, 16, 25, 36, 64, 53]
    assert k2.stats.kv_cache_bytes < base.stats.kv_cache_bytes
    for r in (k2, k3):
        assert r.images.shape == (2, 256, 256, 3) and bool(torch.isfinite(r.latent).all())
        assert not torch.equal(r.latent, base.latent)


def test_scale_skip_decodes_the_baselines_running_sum(tiny):
    base = tiny.generate(LABELS, [0, 1], keep=("latents",))
    skip = tiny.generate(LABELS, [0, 1], method=ScaleSkip(2))
    assert torch.equal(skip.latent, base.latents[7]) and skip.stats.skipped_scales == (8, 9)
    assert skip.images.shape == (2, 256, 256, 3)


def test_fastvar_runs_on_var_and_ratio_zero_is_the_baseline(tiny):
    base = tiny.generate(LABELS, [0, 1])
    zero = FastVAR(prune={-2: 0.0}, cache_scale=-3, layers=(0, 2), skip=())
    assert torch.equal(tiny.generate(LABELS, [0, 1], method=zero).latent, base.latent)
    pruned = tiny.generate(
        LABELS, [0, 1], method=FastVAR(prune={-2: 0.5}, cache_scale=-3, layers=(0, 2), skip=(-1,))
    )
    assert pruned.stats.tokens_per_pass == [p * p for p in PATCH_NUMS[:-1]]
    assert bool(torch.isfinite(pruned.latent).all()) and not torch.equal(pruned.latent, base.latent)
    # its Infinity-2B default prunes layers 3–27: none of var_tiny's two blocks
    with pytest.raises(ValueError, match="prune no block of this 2-block model"):
        tiny.generate(LABELS, [0, 1], method=FastVAR())


def test_fastervar_low_rank_is_refused_without_var_rank_tables_and_guidance_off_runs(tiny):
    with pytest.raises(ValueError, match="no FasterVAR rank presets for model family 'var'"):
        tiny.generate(LABELS, [0, 1], method=FasterVAR())
    off = tiny.generate(LABELS, [0, 1], method=FasterVAR(low_rank=(), skip=()), keep=("logits",))
    assert [lg.shape[0] for lg in off.logits] == [4] * 7 + [
        2
    ] * 3  # the last 3 scales: unconditional rows only
    assert bool(torch.isfinite(off.latent).all())


def test_per_image_seeding_makes_an_image_independent_of_its_batch(tiny):
    for method in (None, Moss.preset("k2", "var")):
        one = tiny.generate([980], [7], method=method)
        three = tiny.generate([207, 980, 5], [5, 7, 9], method=method)
        assert torch.equal(one.images[0], three.images[1])
        assert not torch.equal(three.images[0], three.images[1])


def test_conditioning_schedule_and_guidance_are_checked(tiny):
    fam = tiny.family
    assert fam.condition(["207", 3], per_image=False).labels.tolist() == [207, 3]
    assert fam.condition(torch.tensor([1, 2]), per_image=True).batch_size == 2
    for bad in (["tench"], [1000], [-1], [2.0], [True], torch.tensor([1.0]), torch.tensor([1000]), []):
        with pytest.raises(ValueError, match="class ids"):
            fam.condition(bad, per_image=False)
    with pytest.raises(ValueError, match="resolution must be 256"):
        fam.schedule(512)
    with pytest.raises(ValueError, match="aspect_ratio must be 1"):
        fam.schedule(256, 0.5)
    assert fam.schedule(None).grids == tuple((p, p) for p in PATCH_NUMS)
    grids = fam.schedule().grids
    assert not fam.uses_guidance(SamplingConfig(cfg=0.0), fam.schedule())
    assert fam.uses_guidance(SamplingConfig(cfg=1.0), fam.schedule())  # VAR: 1 is guidance (Infinity: none)
    assert not fam.uses_guidance(SamplingConfig(cfg=(0.0,) * len(grids)), fam.schedule())
    # tau is ignored (the official loop has none)
    a = tiny.generate(LABELS, [0, 1], sampling=SamplingConfig(tau=0.5))
    b = tiny.generate(LABELS, [0, 1], sampling=SamplingConfig(tau=2.0))
    assert torch.equal(a.latent, b.latent)


# ---- accounting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [Baseline(), Moss((50.0, 25.0))], ids=["off", "k2"])
def test_dry_run_flops_equal_a_real_generation(tiny, method):
    # counted per pass as the dry run counts (the backbone: conditioning, embedding, blocks, head); the VQVAE's
    # φ convolutions of the running sum are decoder-side work, outside the passes, in neither count
    counts = {}

    @contextlib.contextmanager
    def count(i):
        with FlopCounterMode(display=False) as counter:
            yield
        counts[i] = counter.get_total_flops()

    real = tiny.generate(LABELS, [0, 1], method=method, decode=False, instrument=count)
    per_pass = [counts[i] for i in range(real.stats.forward_passes)]
    per_pass[0] += counts[None]
    dry = dry_run(tiny, method, batch_size=2)
    assert dry.flops_per_pass == per_pass and all(f > 0 for f in dry.flops_per_pass)
    assert dry.tokens_per_pass == real.stats.tokens_per_pass
    assert dry.kv_cache_bytes == real.stats.kv_cache_bytes


def test_var_d30_kv_cache_on_the_meta_device():
    gen = moss_models.load("var_d30", device="meta")
    cfg = get_var_config("var_d30")
    # K and V, 30 layers, 2 CFG rows, fp16 (the release's autocast)
    per_token = 2 * cfg.depth * 2 * cfg.embed_dim * 2
    out = {}
    for name in ("off", "k2", "k3"):
        out[name] = estimate_kv_cache(gen, moss_models.method_by_name(name, "var")).nbytes
    # the dry run's cache (what the accounting reports) is the one estimated (k3: the shortest dry run)
    assert dry_run(gen, moss_models.method_by_name("k3", "var")).kv_cache_bytes == out["k3"]
    assert out["off"] == (680 - 256) * per_token == 195_379_200
    assert out["k2"] == (680 - 256 - 169) * per_token and out["k3"] == (680 - 256 - 169 - 100) * per_token


# ---- host reads and captured passes --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["off", "k2", "k3", "skip2"])
def test_no_host_read_in_the_scale_loop(tiny, method, monkeypatch):
    helpers = _hot_path_helpers()
    counts = helpers.count_host_reads(tiny, torch.tensor(LABELS), method, monkeypatch)
    in_loop = {k: v for k, v in counts.items() if k[0] in (*helpers.LOOP_STAGES, "text")}
    assert not in_loop, in_loop
    assert sum(counts.values()) <= 3, counts


@pytest.mark.parametrize("method", [Baseline(), Moss((50.0, 25.0))], ids=["off", "k2"])
def test_emulated_graphs_give_the_eager_result(tiny, method):
    passes = PassGraphs("emulate")
    eager = tiny.generate(LABELS, [0, 1], method=method)
    first = tiny.generate(LABELS, [0, 1], method=method, graphs=passes)
    other = tiny.generate([3, 4], [5, 6], method=method, graphs=passes)
    again = tiny.generate(LABELS, [0, 1], method=method, graphs=passes)
    assert passes.captured == first.stats.forward_passes and passes.replayed == 2 * first.stats.forward_passes
    assert torch.equal(first.latent, eager.latent) and torch.equal(again.latent, eager.latent)
    assert torch.equal(other.latent, tiny.generate([3, 4], [5, 6], method=method).latent)


# ---- loading ---------------------------------------------------------------------------------------------------


def test_var_d30_without_checkpoints_names_both_files(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        moss_models.load("var_d30")
    message = str(err.value)
    assert "\n" not in message and "2 of 2 are missing" in message
    assert str(tmp_path / "var_d30.pth") in message and str(tmp_path / "vae_ch160v4096z32.pth") in message
    (tmp_path / "var_d30.pth").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match=r"1 of 2 are missing: vae vae_ch160v4096z32\.pth"):
        moss_models.load("var_d30")


def test_registry(tiny):
    assert {f"var_d{d}" for d in (16, 20, 24, 30, 36)} | {"var_tiny"} <= set(moss_models.MODELS)
    entry = moss_models.MODELS["var_d36"]
    assert entry.family == "var" and entry.default_resolution == 512 and entry.default_weights == "release"
    assert entry.schedule(512, 1.0).grids[-1] == (32, 32) and entry.layer_groups() == (range(36),)
    assert moss_models.MODELS["var_tiny"].default_weights == "random"
    with pytest.raises(ValueError, match="resolution must be 512"):
        entry.schedule(256, 1.0)
    again = moss_models.load("var_tiny")
    assert torch.equal(again.generate([1], [0]).images, tiny.generate([1], [0]).images)  # seeded weights
    assert moss_models.load("var_tiny", seed=1).generate([1], [0]).images.float().std() > 0
