"""The built-in methods and the method interface on the tiny Infinity: sub-layer hooks, scale skipping, explicit
MoSs selections, exact dry-run FLOPs, intermediates, names, and the notebook API."""

import contextlib
import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import moss_models
from moss_dispatch import Dispatch
from moss_models.core import (
    AttentionSpec,
    Baseline,
    Moss,
    NextScaleGenerator,
    ScaleSkip,
    ScorerSpec,
    dry_run,
    method_by_name,
)
from moss_models.infinity import TextBatch, get_config

SEEDS = [1, 2]
KINDS = ("sa", "ca", "ffn")


def generate(gen, text, method=None, **kw):
    return gen.generate(text, SEEDS, resolution=256, method=method, **kw)


@pytest.fixture(scope="module")
def baseline(tiny_generator, fixture_text):
    return generate(tiny_generator, fixture_text, keep=("latents",))


# ------------------------------------------------------------------------------------------ sub-layer hooks


class Recorder:
    """An identity hook that records every call, grouped by pass (the pass index comes from ``instrument``)."""

    def __init__(self):
        self.calls: dict[int, list] = {}
        self.current: int | None = None

    @contextlib.contextmanager
    def instrument(self, i):
        self.current = i
        yield
        self.current = None

    def __call__(self, site, x, branch):
        self.calls.setdefault(self.current, []).append(
            (site.layer, site.kind, tuple(x.shape), site.spec.num_tokens)
        )
        return branch(x, None)


@pytest.mark.parametrize(
    "make",
    [lambda hook: dataclasses.replace(Baseline(), hook=hook), lambda hook: Moss.preset("k2", hook=hook)],
    ids=["off", "k2"],
)
def test_hook_sees_every_sublayer_of_every_pass_once(tiny_generator, fixture_text, make):
    rec = Recorder()
    method = make(rec)
    result = generate(tiny_generator, fixture_text, method, instrument=rec.instrument)
    plain = generate(tiny_generator, fixture_text, dataclasses.replace(method, hook=None))
    depth, batch = get_config("infinity_tiny").depth, fixture_text.batch_size
    assert None not in rec.calls  # the conditioning runs no block
    assert sorted(rec.calls) == list(range(result.stats.forward_passes))
    for i, tokens in enumerate(result.stats.tokens_per_pass):
        calls = rec.calls[i]
        assert Counter((layer, kind) for layer, kind, _, _ in calls) == Counter(
            (layer, kind) for layer in range(depth) for kind in KINDS
        )
        assert {shape for _, _, shape, _ in calls} == {(2 * batch, tokens, 64)}  # CFG rows, the step's tokens
        assert {n for *_, n in calls} == {tokens}
    assert torch.equal(result.images, plain.images)
    assert torch.equal(result.latent, plain.latent)


def _gather(x, index):
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _scatter(out, index, n):
    full = out.new_zeros(out.shape[0], n, out.shape[-1])
    return full.scatter(1, index[..., None].expand(-1, -1, out.shape[-1]), out)


def all_tokens_hook(site, x, branch):
    """Every token through the subset path: gather, ``branch(x_sub, index)``, scatter back."""
    b, n, _ = x.shape
    index = torch.arange(n, device=x.device).expand(b, -1)
    return _scatter(branch(_gather(x, index), index), index, n)


def half_ffn_hook(site, x, branch):
    """The FFN of the first half of the tokens only (zeros elsewhere); the other branches unchanged."""
    if site.kind != "ffn":
        return branch(x, None)
    b, n, _ = x.shape
    index = torch.arange((n + 1) // 2, device=x.device).expand(b, -1)
    return _scatter(branch(_gather(x, index), index), index, n)


def test_subset_hook_over_all_tokens_is_the_baseline(tiny_generator, fixture_text, baseline):
    result = generate(tiny_generator, fixture_text, Baseline(hook=all_tokens_hook))
    assert torch.equal(result.latent, baseline.latent)
    assert torch.equal(result.images, baseline.images)


def test_pruning_hook_changes_the_image_but_runs(tiny_generator, fixture_text, baseline):
    result = generate(tiny_generator, fixture_text, Baseline(hook=half_ffn_hook))
    assert result.images.shape == baseline.images.shape
    assert result.stats.tokens_per_pass == baseline.stats.tokens_per_pass
    assert not torch.equal(result.images, baseline.images)


def test_subset_of_a_packed_multiscale_pass_is_refused(tiny_generator, fixture_text):
    with pytest.raises(NotImplementedError, match="several scales"):
        generate(tiny_generator, fixture_text, Moss.preset("k2", hook=all_tokens_hook))


# ------------------------------------------------------------------------------------------ scale skipping


@pytest.mark.parametrize(("n", "skipped"), [(1, (6,)), (2, (5, 6))])
def test_scale_skip_decodes_the_baselines_running_sum(tiny_generator, fixture_text, baseline, n, skipped):
    result = generate(tiny_generator, fixture_text, ScaleSkip(n))
    assert torch.equal(result.latent, baseline.latents[-1 - n])
    assert result.stats.skipped_scales == skipped
    assert result.stats.forward_passes == 7 - n
    assert result.stats.tokens_per_pass == baseline.stats.tokens_per_pass[: 7 - n]
    assert result.stats.kv_cache_bytes < baseline.stats.kv_cache_bytes
    assert result.images.shape == (2, 256, 256, 3)
    assert result.method == f"skip{n}"


def test_scale_skip_zero_is_the_baseline_and_too_many_is_refused(tiny_generator, fixture_text, baseline):
    zero = generate(tiny_generator, fixture_text, ScaleSkip(0))
    assert torch.equal(zero.images, baseline.images) and torch.equal(zero.latent, baseline.latent)
    assert zero.stats.kv_cache_bytes == baseline.stats.kv_cache_bytes and zero.stats.skipped_scales == ()
    with pytest.raises(ValueError, match="num_skipped=7 would skip every scale of a 7-scale schedule"):
        generate(tiny_generator, fixture_text, ScaleSkip(7))
    with pytest.raises(ValueError, match="num_skipped must be an int >= 0"):
        ScaleSkip(-1)


# ------------------------------------------------------------------------------------------ explicit MoSs selections


def test_explicit_dispatch_equals_the_scorer_path(tiny_generator, fixture_text):
    scored = generate(tiny_generator, fixture_text, Moss.preset("k3"))
    chosen = scored.dispatch
    assert isinstance(chosen, Dispatch) and chosen.batch_size == 2
    masks = [
        torch.zeros(2, s.grid[0] * s.grid[1], dtype=torch.bool)
        .scatter_(1, s.flat_index, True)
        .view(2, *s.grid)
        for s in chosen.selections
    ]
    explicit = {
        "dispatch": chosen,
        "function": lambda latent, plan: plan.dispatch(ScorerSpec("variance")(latent)),
        "masks": Dispatch.from_masks(chosen.plan, masks),
    }
    for how, selection in explicit.items():
        result = generate(tiny_generator, fixture_text, Moss.preset("k3", dispatch=selection))
        assert torch.equal(result.latent, scored.latent), how
        assert torch.equal(result.images, scored.images), how
        assert result.stats.tokens_per_pass == scored.stats.tokens_per_pass, how
        for a, b in zip(result.dispatch.selections, chosen.selections, strict=True):
            assert torch.equal(a.flat_index, b.flat_index), how


def test_explicit_dispatch_for_other_scales_or_batch_is_refused(tiny_generator, fixture_text):
    k2 = generate(tiny_generator, fixture_text, Moss.preset("k2")).dispatch
    with pytest.raises(ValueError, match="the given dispatch selects scales"):
        generate(tiny_generator, fixture_text, Moss.preset("k3", dispatch=k2))
    one = Dispatch(k2.plan, tuple(dataclasses.replace(s, flat_index=s.flat_index[:1]) for s in k2.selections))
    with pytest.raises(ValueError, match="the given dispatch is for 1 images, this batch has 2"):
        generate(tiny_generator, fixture_text, Moss.preset("k2", dispatch=one))
    with pytest.raises(ValueError, match=r"must give a moss_dispatch\.Dispatch"):
        generate(tiny_generator, fixture_text, Moss.preset("k2", dispatch=lambda latent, plan: None))


# ------------------------------------------------------------------------------------------ exact accounting


@pytest.mark.parametrize(
    "method",
    [
        Baseline(),
        Moss.preset("k2"),
        Moss.preset("k5"),
        Moss.preset("k3", attention=AttentionSpec(mode="sa")),
        ScaleSkip(2),
        method_by_name("fastvar"),
        method_by_name("fastervar"),
        method_by_name("k3+cfgoff"),
        method_by_name("k2+fastvar"),
        method_by_name("cfgoff", keep="cond"),
    ],
    ids=lambda m: f"{m.name}-{m.attention.mode}-{getattr(m, 'keep', '')}",
)
def test_dry_run_flops_equal_a_real_generation(tiny_generator, method):
    text = TextBatch.from_features([torch.randn(7, 256), torch.randn(7, 256)])
    with FlopCounterMode(display=False) as counter:
        real = tiny_generator.generate(text, [0, 1], resolution=256, method=method, decode=False)
    dry = dry_run(tiny_generator, method, resolution=256, batch_size=2, text_tokens=7)
    assert len(dry.flops_per_pass) == real.stats.forward_passes
    assert all(f > 0 for f in dry.flops_per_pass)
    assert dry.flops == counter.get_total_flops()
    assert dry.tokens_per_pass == real.stats.tokens_per_pass
    assert dry.kv_cache_bytes == real.stats.kv_cache_bytes
    assert dry.skipped_scales == real.stats.skipped_scales


# ------------------------------------------------------------------------------------------ intermediates


def test_keep_returns_one_entry_per_pass(tiny_generator, fixture_text):
    result = generate(
        tiny_generator, fixture_text, Moss.preset("k2"), keep=("logits", "latents", "hidden"), hidden_layer=1
    )
    passes = result.stats.forward_passes
    assert len(result.logits) == len(result.latents) == len(result.hidden) == len(result.samples) == passes
    for tokens, logits, latent, hidden, samples in zip(
        result.stats.tokens_per_pass,
        result.logits,
        result.latents,
        result.hidden,
        result.samples,
        strict=True,
    ):
        assert hidden.shape == (4, tokens, 64)  # 2 images × CFG rows, the pass's tokens, embed_dim
        assert logits.shape == (4, tokens, 64)  # 2·d_vae bit logits of every guided row
        assert samples.shape == (2, tokens, 32)
        assert latent.shape == result.latent.shape
    assert torch.equal(result.latents[-1], result.latent)
    last = generate(tiny_generator, fixture_text, Moss.preset("k2"), keep=("hidden",), hidden_layer=-1)
    depth = get_config("infinity_tiny").depth
    same = generate(tiny_generator, fixture_text, Moss.preset("k2"), keep=("hidden",), hidden_layer=depth - 1)
    assert all(torch.equal(a, b) for a, b in zip(last.hidden, same.hidden, strict=True))
    assert not torch.equal(last.hidden[-1], result.hidden[-1])  # layer 1 is not the last of 4
    plain = generate(tiny_generator, fixture_text, Moss.preset("k2"))
    assert plain.logits is None and plain.latents is None and plain.hidden is None


def test_keep_refuses_unknown_names(tiny_generator, fixture_text):
    with pytest.raises(ValueError, match=r"keep must name some of .*'attention'"):
        generate(tiny_generator, fixture_text, keep=("latents", "attention"))


# ------------------------------------------------------------------------------------------ names and the notebook API


def test_method_by_name():
    assert method_by_name("off") == Baseline()
    k5 = method_by_name("k5")
    assert isinstance(k5, Moss) and k5.thresholds == (90.0, 50.0, 15.0, 10.0, 5.0) and k5.name == "k5"
    assert method_by_name("skip2") == ScaleSkip(2)
    assert method_by_name("k3", attention=AttentionSpec(mode="sa")).attention.mode == "sa"
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        method_by_name("bogus")


@pytest.fixture(scope="module")
def pipe():
    return moss_models.load("infinity_tiny")


def test_load_and_call(pipe):
    assert isinstance(pipe, NextScaleGenerator)
    out = pipe(["a red fox"], method="k5", seed=0)
    assert len(out.images) == 1 and out.images[0].size == (256, 256) and out.images[0].mode == "RGB"
    assert out.result.method == "k5"
    plan_tokens = out.result.dispatch.plan.moss_tokens
    assert out.stats.tokens_per_pass == [1, 4, plan_tokens]  # k=5 of 7 scales: 2 drafter passes, one packed
    assert out.stats.kv_cache_bytes > 0
    assert {"draft", "dispatch", "moss", "decode"} <= set(out.stats.stage_seconds)
    again = pipe("a red fox", method=Moss.preset("k5"), seed=0)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(again.images[0]))
    other = pipe(["a red fox"], method="k5", seed=1)
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(other.images[0]))


def test_load_unknown_model_lists_the_models():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; choose one of \[.*'infinity_tiny'"):
        moss_models.load("nope")
