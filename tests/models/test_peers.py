"""The peers as methods (FastVAR, FasterVAR, guidance off) and their composition, on the tiny Infinity at 256².

At 256² the schedule is 1, 2, 4, 6, 8, 12, 16: the presets' scales -5…-1 are 4², 6², 8², 12², 16² there.
Equivalence with the official codes is in test_peers_official.py.
"""

import pytest
import torch

from moss_models import (
    Baseline,
    Compose,
    FasterVAR,
    FastVAR,
    GuidanceOff,
    Moss,
    SamplingConfig,
    ScaleSkip,
    method_by_name,
)
from moss_models.infinity import TextBatch

SEEDS = [1, 2]


def generate(gen, text, method, **kw):
    return gen.generate(text, SEEDS, resolution=256, method=method, **kw)


@pytest.fixture(scope="module")
def baseline(tiny_generator, fixture_text):
    return generate(tiny_generator, fixture_text, Baseline())


# ------------------------------------------------------------------------------------------ do-nothing settings


@pytest.mark.parametrize(
    "method",
    [
        FastVAR(prune={-4: 0.0, -3: 0.0}, skip=()),
        FastVAR(prune={}, skip=()),
        FasterVAR(unguided=(), low_rank=(), skip=()),
        Compose(Baseline(), [GuidanceOff(scales=())]),
        Compose(Moss(thresholds=(100.0,)), [FastVAR(prune={-4: 0.0}, skip=())]),
    ],
    ids=["fastvar-ratios-0", "fastvar-no-prune", "fastervar-nothing", "cfgoff-no-scales", "k1-100+fastvar-0"],
)
def test_do_nothing_settings_give_the_baseline_bit_for_bit(tiny_generator, fixture_text, baseline, method):
    result = generate(tiny_generator, fixture_text, method)
    assert torch.equal(result.latent, baseline.latent)
    assert torch.equal(result.images, baseline.images)


# ------------------------------------------------------------------------------------------ guidance off


def test_guidance_off_uncond_is_guidance_weight_0(tiny_generator, fixture_text):
    """FasterVAR's reading of weight 0: cfg·cond + (1 − cfg)·uncond at cfg = 0 is the unconditional logits; moss
    never computes the conditional row of those passes, and gives the same image."""
    off = generate(tiny_generator, fixture_text, GuidanceOff(scales=(-3, -2, -1)))
    cfgs = (3.0,) * 4 + (0.0,) * 3
    weight0 = generate(tiny_generator, fixture_text, Baseline(), sampling=SamplingConfig(cfg=cfgs))
    assert torch.equal(off.images, weight0.images)
    assert [s.step.rows for s in off.steps] == ["all"] * 4 + ["uncond"] * 3


def test_guidance_off_cond_is_guidance_weight_1(tiny_generator, fixture_text):
    off = generate(tiny_generator, fixture_text, GuidanceOff(scales=(-2, -1), keep="cond"), keep=("logits",))
    cfgs = (3.0,) * 5 + (1.0,) * 2
    weight1 = generate(tiny_generator, fixture_text, Baseline(), sampling=SamplingConfig(cfg=cfgs))
    assert torch.equal(off.images, weight1.images)
    assert off.logits[-1].shape[0] == 2  # one row per image: the head runs on the conditional rows only


def test_fastervar_forces_unconditional_rows_without_guidance(tiny_generator, fixture_text):
    result = generate(tiny_generator, fixture_text, FasterVAR(), sampling=SamplingConfig(cfg=1.0))
    assert (
        result.stats.kv_cache_bytes
        == generate(tiny_generator, fixture_text, ScaleSkip(2)).stats.kv_cache_bytes
    )


# ------------------------------------------------------------------------------------------ batches


@pytest.mark.parametrize("name", ["fastvar", "fastervar", "k3+cfgoff", "k2+fastvar"])
def test_batches_work_and_each_image_is_its_own(tiny_generator, fixture_text, name):
    """The official FastVAR and FasterVAR Infinity code fail at batch 2; here an image does not depend on its batch."""
    method = method_by_name(name)
    both = generate(tiny_generator, fixture_text, method)
    second = tiny_generator.generate(TextBatch.from_features([fixture_text.select(1)]), [2], resolution=256,
                                     method=method)  # fmt: skip
    assert torch.equal(both.images[1:], second.images)


def test_fastervar_projections_are_seeded_per_image(tiny_generator, fixture_text):
    a = generate(tiny_generator, fixture_text, FasterVAR())
    b = generate(tiny_generator, fixture_text, FasterVAR())
    c = generate(tiny_generator, fixture_text, FasterVAR(seed_offset=7))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)  # the projection generator changed, the sampler's did not


# ------------------------------------------------------------------------------------------ plans and caches


def test_fastvar_plan_and_per_layer_cache(tiny_generator):
    grids = tiny_generator.family.schedule(256, 1.0).grids
    plan = FastVAR().plan(grids)
    assert plan.skipped_scales == (5, 6)
    assert not plan.steps[-1].append  # 8², now the last pass, caches nothing
    # 6² (36 tokens, 40 % pruned: 22 kept) appends only its kept tokens in the pruned layers [3, 28) ∩ [0, 4)
    assert plan.uncached == ((3, 28, 14),)
    assert plan.cache_capacity(4) == (57, 57, 57, 43)
    cache = tiny_generator.family.kv_cache(4, plan.cache_capacity(4))
    assert [k.shape[2] for k in cache.keys] == [57, 57, 57, 43]


def test_fastvar_caches_fewer_bytes_than_skipping_alone(tiny_generator, fixture_text):
    fastvar = generate(tiny_generator, fixture_text, FastVAR(), decode=False)
    skip = generate(tiny_generator, fixture_text, ScaleSkip(2), decode=False)
    assert fastvar.stats.kv_cache_bytes < skip.stats.kv_cache_bytes


def test_compositions_mean_what_they_say(tiny_generator):
    grids = tiny_generator.family.schedule(256, 1.0).grids
    k3 = method_by_name("k3+cfgoff").plan(grids)
    assert [s.kind for s in k3.steps][-1] == "packed" and k3.steps[-1].rows == "uncond"
    assert all(s.rows == "all" for s in k3.steps[:-1])
    k2 = method_by_name("k2+fastvar").plan(grids)
    assert k2.skipped_scales == ()  # MoSs runs 12² and 16² in its packed pass instead of FastVAR's skip
    assert k2.uncached == ((3, 28, 14), (3, 28, 32))  # 6² and 8² are pruned drafter scales and both append


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (lambda: Compose(Moss.preset("k3"), [FastVAR(skip=())]), "does not run as a full pass"),
        (lambda: Compose(Moss.preset("k2"), [FastVAR()]), "give fastvar skip: \\[\\] to combine them"),
        (lambda: method_by_name("k5+cfgoff"), "guided for some scales and not for others"),
        (
            lambda: Compose(Baseline(), [GuidanceOff(scales=(-3,))]),
            "once guidance is turned off it must stay off",
        ),
        (
            lambda: Compose(Baseline(), [FastVAR(skip=()), FasterVAR(skip=(), unguided=())]),
            "fastvar and fastervar both change the passes of scale 4",
        ),
        (lambda: Compose(FastVAR(), [GuidanceOff()]), "the base must be a plan-making method"),
        (lambda: Compose(Baseline(), [Moss.preset("k2")]), "cannot be applied on top of another method"),
        (lambda: FastVAR(prune={-4: 1.0}), "pruning ratio must be in \\[0, 1\\)"),
        (lambda: FastVAR(cache_scale=-3), "must run in full before every pruned scale"),
        (lambda: FastVAR(prune={-9: 0.5}), "outside the 7-scale schedule"),
        (lambda: FastVAR(sublayers=("attn",)), "sublayers must be some of"),
        (lambda: FastVAR(layers=(5, 2)), "layers must be \\[first, stop\\)"),
        (lambda: GuidanceOff(keep="both"), "keep must be one of"),
        (lambda: method_by_name("k3+skip2"), "unknown method part 'skip2'"),
        (lambda: FastVAR(skip=(0,), prune={}), "cannot skip scale 0"),
        (lambda: FastVAR(prune={-4: 0.4, 3: 0.1}), "names scale 3 twice"),
        (
            lambda: Compose(Baseline(), [FasterVAR(skip=()), GuidanceOff(keep="cond")]),
            "already runs on its 'uncond' rows",
        ),
        (lambda: method_by_name("skip2+fastervar"), "packed or skipped"),
    ],
)
def test_bad_combinations_and_settings_are_refused(tiny_generator, method, message):
    grids = tiny_generator.family.schedule(256, 1.0).grids
    with pytest.raises(ValueError, match=message):
        method().plan(grids)


def test_fastervar_rank_presets_must_cover_the_block_groups(tiny_generator, fixture_text):
    with pytest.raises(ValueError, match="rank ratios for 1 block groups, the model has 2"):
        generate(tiny_generator, fixture_text, FasterVAR(ranks={-3: [0.5]}))
    with pytest.raises(ValueError, match=r"unknown FasterVAR alpha '0\.5'"):
        generate(tiny_generator, fixture_text, FasterVAR(alpha="0.5"))


def test_alpha_is_matched_by_value(tiny_generator, fixture_text):
    """``moss.alpha=0.90`` arrives from the command line as the float 0.9: it names the preset "0.90"."""
    a = generate(tiny_generator, fixture_text, FasterVAR(alpha=0.90), decode=False)
    b = generate(tiny_generator, fixture_text, FasterVAR(alpha="0.90"), decode=False)
    assert torch.equal(a.latent, b.latent)


def test_hidden_states_of_a_low_rank_pass_are_the_restored_ones(tiny_generator, fixture_text):
    last = generate(tiny_generator, fixture_text, FasterVAR(), keep=("hidden",))
    assert last.hidden[-1].shape == (
        2,
        64,
        64,
    )  # 8²: the restored chunk output, one (unconditional) row per image
    inner = generate(tiny_generator, fixture_text, FasterVAR(), keep=("hidden",), hidden_layer=0)
    assert (
        inner.steps[-1].hidden is None
    )  # inside a low-rank chunk no block output is the pass's hidden state
    assert inner.steps[0].hidden.shape == (4, 1, 64)


def test_describe_names_every_field():
    d = method_by_name("k2+fastvar").describe()
    assert d["method"] == "Compose" and d["base"]["thresholds"] == [50.0, 25.0]
    assert d["parts"][0]["prune"] == {"-4": 0.4, "-3": 0.5} and d["parts"][0]["skip"] == []
    assert FasterVAR().describe()["alpha"] == "0.96"
