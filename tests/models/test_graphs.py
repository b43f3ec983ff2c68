"""Captured passes (``generate(graphs=...)``): the bookkeeping on the CPU, the real CUDA graphs on a GPU.

``PassGraphs("emulate")`` replays a captured pass by re-running it on the captured tensors, after the generation
copied its own context, inputs and token positions into them; everything a replay would read stale shows up as
a different image. The CUDA tests run the same generations with real graphs.
"""

from __future__ import annotations

import pytest
import torch

import moss_models
from moss_models.core.graphs import PassGraphs
from moss_models.core.methods import method_by_name

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def tiny():
    return moss_models.load("infinity_tiny", arch={"max_resolution": 512})


def _images(gen, prompts, seeds, method, **kwargs):
    return gen.generate(
        prompts, seeds, method=method_by_name(method), decode=False, keep=("logits",), **kwargs
    )


def _same(a, b):
    assert torch.equal(a.latent, b.latent)
    for la, lb in zip(a.logits, b.logits, strict=True):
        assert torch.equal(la, lb)


@pytest.mark.parametrize("method", ["off", "k3", "skip2", "k3+cfgoff"])
def test_replayed_passes_give_the_eager_images(tiny, method):
    passes = PassGraphs("emulate")
    # three generations of one shape (prompts of one token count): the first captures, the others replay with
    # their own text, seeds and (for MoSs) dispatched positions
    for prompts, seeds in (
        (["a red fox", "a blue car"], [0, 1]),
        (["an old boat", "a green cat"], [7, 3]),
    ) * 2:
        _same(_images(tiny, prompts, seeds, method, graphs=passes), _images(tiny, prompts, seeds, method))
    steps = len(method_by_name(method).plan(tiny.schedule(512).grids).steps)
    assert (passes.captured, passes.replayed, len(passes)) == (steps, 3 * steps, 1)


def test_a_new_shape_is_captured_beside_the_old(tiny):
    passes = PassGraphs("emulate")
    for resolution, prompts in ((512, ["a red fox"]), (256, ["a red fox"]), (512, ["a very long red fox"])):
        _same(
            _images(tiny, prompts, [0], "k2", graphs=passes, resolution=resolution),
            _images(tiny, prompts, [0], "k2", resolution=resolution),
        )
    assert len(passes) == 3 and passes.replayed == 0
    _images(tiny, ["a red fox"], [5], "k2", graphs=passes, resolution=256)
    assert passes.replayed == 6  # 256²: 5 drafter passes and the packed one


@pytest.mark.parametrize(
    ("method", "kwargs", "reason"),
    [
        ("fastvar", {}, "places hooks inside the passes"),
        ("fastervar", {}, "places hooks inside the passes"),
        ("k2", {"keep": ("hidden",)}, "keep"),
    ],
)
def test_what_a_graph_cannot_hold_is_refused(tiny, method, kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        tiny.generate(
            ["a red fox"], [0], method=method_by_name(method), graphs=PassGraphs("emulate"), **kwargs
        )


def test_graphs_need_cuda_and_sdpa(tiny):
    if not CUDA:
        with pytest.raises(ValueError, match="need a CUDA device"):
            tiny.generate(["a red fox"], [0], graphs=True)
    flex = moss_models.Moss.preset("k2", attention=moss_models.AttentionSpec(backend="flex"))
    with pytest.raises(ValueError, match="backend 'flex' is not captured"):
        tiny.generate(["a red fox"], [0], method=flex, graphs=PassGraphs("emulate"))


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("method", ["off", "k5"])
def test_cuda_graphs_give_the_eager_images(method):
    gen = moss_models.load("infinity_tiny", device="cuda", dtype="bf16")
    for prompts, seeds in ((["a red fox", "a blue car"], [0, 1]), (["an old boat", "a green cat"], [7, 3])):
        eager = _images(gen, prompts, seeds, method)
        graphed = _images(gen, prompts, seeds, method, graphs=True)
        # the same kernels on the same inputs: equal up to kernels whose reduction order is not fixed
        torch.testing.assert_close(graphed.latent, eager.latent, rtol=0, atol=1e-2)
    assert gen._graphs.replayed > 0


@pytest.mark.skipif(not CUDA, reason="checks which SDPA kernel runs on a GPU")
@pytest.mark.parametrize(("method", "mode"), [("off", "cssa"), ("k5", "cssa"), ("k5", "sa")])
def test_attention_runs_a_fused_sdpa_kernel_not_the_math_fallback(method, mode):
    # Masks rule out flash attention; with the math kernel disallowed, a pass that would fall back raises.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = moss_models.load("infinity_tiny", device="cuda", dtype="bf16")
    spec = moss_models.AttentionSpec(mode=mode)
    m = (
        moss_models.Baseline(attention=spec)
        if method == "off"
        else moss_models.Moss.preset(method, attention=spec)
    )
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused):
        out = gen.generate(["a red fox"], [0], method=m, decode=False)
    assert out.stats.forward_passes > 0
