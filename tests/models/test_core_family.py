"""The proof that the generator is family-neutral: a complete class-conditional test family of a few dozen lines.

``ToyFamily`` implements :class:`moss_models.core.ScaleFamily` with a one-layer transformer over codebook indices
(labels as conditions, CFG with a null class, 4 scales up to an 8×8 latent); :class:`NextScaleGenerator` runs it
under every built-in method without knowing anything of it.
"""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from moss_attention import mixed_scale_attention
from moss_dispatch import ScalePlan, scatter_to_grid, upsample_to
from moss_models.core import (
    AttentionSpec,
    Baseline,
    KVCache,
    Moss,
    NextScaleGenerator,
    SamplingConfig,
    ScaleFamily,
    ScaleSkip,
    dry_run,
)

GRIDS = ((1, 1), (2, 2), (4, 4), (8, 8))
CLASSES, DIM, HEADS, CODES, LATENT = 10, 32, 2, 16, 4


# ---------------------------------------------------------------------------------------------- the test family
class ToyNet(nn.Module):
    """Label start token, linear input embedding, one self-attention + FFN block, a head over the codebook."""

    def __init__(self):
        super().__init__()
        self.label = nn.Embedding(CLASSES + 1, DIM)  # the last class is the unconditional one
        self.level, self.inp = nn.Embedding(len(GRIDS), DIM), nn.Linear(LATENT, DIM)
        self.qkv, self.proj, self.ffn = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.head, self.codebook = nn.Linear(DIM, CODES), nn.Embedding(CODES, LATENT)
        self.register_buffer("decoder", torch.linspace(-1, 1, 3 * LATENT).view(3, LATENT))  # fixed

    def forward(self, x, spec):
        def sa(x_in, index):  # over [KV cache ++ these tokens]; the pass's keys go into the cache
            (b, n, _), a = x_in.shape, spec.attention
            q, k, v = self.qkv(x_in).view(b, n, 3, HEADS, DIM // HEADS).unbind(2)
            kc, vc = spec.cache.read(0)
            ids = spec.subset(index).scale_ids
            out = mixed_scale_attention(
                q, k, v, kc, vc, ids, mode=a.mode, backend=a.backend, sa_impl=a.sa_impl
            )  # fmt: skip
            if spec.append:
                spec.cache.write(0, k, v)
            return self.proj(out.reshape(b, n, DIM))

        x = x + spec.sublayer(0, "sa", x, sa)
        x = x + spec.sublayer(0, "ffn", x, lambda x_in, index: torch.tanh(self.ffn(x_in)))
        if spec.layer_outputs is not None:
            spec.layer_outputs(0, x)
        if spec.append:
            spec.cache.commit()
        return x


def _flat(part, batch, device):  # (B, n) row-major positions of a part's tokens
    full = torch.arange(part.count, device=device).expand(batch, -1)
    return full if part.flat_index is None else part.flat_index


def _at(grid_map, part):  # (B, C, h, w) at a part's positions: (B, n, C)
    index = _flat(part, len(grid_map), grid_map.device)
    return grid_map.flatten(2).gather(2, index[:, None].expand(-1, grid_map.shape[1], -1)).transpose(1, 2)


@dataclass
class Labels:
    ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]


class ToyFamily(ScaleFamily):
    """Class-conditional, CFG with a null class, codebook indices summed onto an 8×8 latent."""

    name, num_layers = "toy", 1

    def __init__(self, net: ToyNet):
        self.net = net.eval()

    @property
    def device(self):
        return self.net.head.weight.device

    def schedule(self, resolution, aspect_ratio):
        return SimpleNamespace(grids=GRIDS)

    def positions(self, schedule):
        return None  # no RoPE

    def condition(self, conditions, *, per_image):
        return (
            conditions
            if isinstance(conditions, Labels)
            else Labels(torch.as_tensor(conditions, device=self.device))
        )

    def uses_guidance(self, sampling, schedule):
        return any(c != 1 for c in sampling.per_scale("cfg", len(schedule.grids)))

    def encode_condition(self, cond, *, guidance, per_image):  # rows: the images, then their null labels
        return torch.cat([cond.ids, torch.full_like(cond.ids, CLASSES)]) if guidance else cond.ids

    def kv_cache(self, rows, capacity):
        return KVCache(1, rows, HEADS, DIM // HEADS, capacity, torch.float32, self.device)

    def initial_latent(self, batch, schedule):
        return torch.zeros(batch, LATENT, 8, 8, device=self.device)

    def embed(self, latent, ctx, tokens, schedule):
        if tokens.scales == (0,):
            x = self.net.label(ctx)[:, None]
        else:  # the running sum at each part's grid, at its positions
            feats = [_at(F.interpolate(latent, size=p.grid, mode="area"), p) for p in tokens.parts]
            x = self.net.inp(torch.cat(feats, 1)).repeat(len(ctx) // len(latent), 1, 1)
        return x + self.net.level(tokens.scale_ids(self.device))

    def forward(self, x, ctx, spec):
        return self.net(x, spec)

    def logits(self, hidden, ctx, tokens, sampling, schedule):
        return self.net.head(hidden)

    def sample(self, raw, tokens, sampling, schedule, generators, batch):
        if generators is None:  # a meta-device dry run
            return torch.empty(batch, raw.shape[1], dtype=torch.long, device=raw.device)
        ids = tokens.scale_ids(raw.device)
        cfg, tau = (
            torch.tensor(sampling.per_scale(f, len(GRIDS)), device=raw.device)[ids, None]
            for f in ("cfg", "tau")
        )
        logits = cfg * raw[:batch] + (1 - cfg) * raw[batch:] if len(raw) > batch else raw
        probs = (logits / tau).softmax(-1)
        if len(generators) == 1:  # "official" seeding: one draw over the batch
            return torch.multinomial(probs.flatten(0, 1), 1, generator=generators[0]).view(batch, -1)
        return torch.stack(
            [torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generators, strict=True)]
        )

    def accumulate(self, latent, samples, tokens, schedule):
        for p, idx in zip(tokens.parts, tokens.split(samples), strict=True):
            codes = scatter_to_grid(self.net.codebook(idx), _flat(p, len(idx), idx.device), p.grid)
            latent = latent + upsample_to(codes, (8, 8), "bilinear")
        return latent

    def decode(self, latent, *, per_image):
        return torch.tanh(torch.einsum("bdhw,cd->bchw", latent, self.net.decoder))

    def to_uint8(self, decoded):
        return ((decoded + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def dry_run_family(self):
        with torch.device("meta"):
            return ToyFamily(ToyNet())

    def dry_run_condition(self, batch, tokens):
        return Labels(torch.zeros(batch, dtype=torch.long, device="meta"))


# ---------------------------------------------------------------------------------------------- the tests
LABELS, SEEDS = [3, 7], [11, 12]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return NextScaleGenerator(ToyFamily(ToyNet()))


def run(gen, method=None, seeds=SEEDS, **kw):
    return gen.generate(LABELS, seeds, method=method, **kw)


def test_baseline_runs_every_scale_and_caches_all_but_the_last(gen):
    base = run(gen)
    assert base.stats.tokens_per_pass == [1, 4, 16, 64]
    assert base.stats.kv_cache_bytes == KVCache(1, 4, HEADS, DIM // HEADS, 21, torch.float32, "cpu").nbytes
    assert base.latent.shape == (2, LATENT, 8, 8)
    assert base.images.shape == (2, 8, 8, 3) and base.images.dtype == torch.uint8
    assert base.samples[-1].shape == (2, 64) and int(base.samples[-1].max()) < CODES
    assert base.method == "off" and base.dispatch is None
    # without guidance the rows are not doubled
    no_cfg = run(gen, sampling=SamplingConfig(cfg=1.0), keep=("logits", "hidden"))
    assert [t.shape[0] for t in no_cfg.logits] == [2] * 4 and no_cfg.hidden[-1].shape == (2, 64, DIM)
    assert no_cfg.stats.kv_cache_bytes * 2 == base.stats.kv_cache_bytes


@pytest.mark.parametrize("mode", ["cssa", "sa"])
def test_moss_band_100_is_the_baseline_exactly(gen, mode):
    base = run(gen)
    moss = run(gen, Moss((100.0,), attention=AttentionSpec(mode=mode)))
    assert torch.equal(moss.latent, base.latent)
    assert torch.equal(moss.images, base.images)
    assert moss.stats.tokens_per_pass == base.stats.tokens_per_pass


def test_moss_k2_packs_the_refine_scales_into_one_pass(gen):
    moss = Moss((50.0, 25.0))
    result = run(gen, moss)
    plan = ScalePlan(GRIDS, 2, (50.0, 25.0))
    assert plan.counts == (4, 16)  # 25 % of 4×4 and 25 % of 8×8
    assert result.stats.tokens_per_pass == [1, 4, plan.moss_tokens] == [1, 4, 20]
    assert result.stats.kv_cache_bytes == 4 * plan.draft_tokens * DIM * 2 * 4
    assert [s.count for s in result.dispatch.selections] == [4, 16]
    assert not torch.equal(result.latent, run(gen).latent)
    # the attention setting reaches the family's own attention: "sa" hides the other refine scale's tokens
    sa = run(gen, Moss((50.0, 25.0), attention=AttentionSpec(mode="sa")))
    assert sa.stats.tokens_per_pass == result.stats.tokens_per_pass
    assert not torch.equal(sa.latent, result.latent)


def test_scale_skip_decodes_the_baselines_running_sum(gen):
    base = run(gen, keep=("latents",))
    skip = run(gen, ScaleSkip(1))
    assert torch.equal(skip.latent, base.latents[2])
    assert skip.stats.skipped_scales == (3,) and skip.stats.tokens_per_pass == [1, 4, 16]
    assert skip.stats.kv_cache_bytes < base.stats.kv_cache_bytes


def test_seeds_decide_the_images(gen):
    a, b, c = run(gen), run(gen), run(gen, seeds=[11, 13])
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.latent[0], c.latent[0]) and not torch.equal(a.latent[1], c.latent[1])
    official = SamplingConfig(seeding="official")  # one generator for the batch, seeded with the first seed
    assert torch.equal(run(gen, sampling=official).images, run(gen, sampling=official).images)
    assert not torch.equal(run(gen, sampling=official).latent, a.latent)


@pytest.mark.parametrize(
    "method",
    [Baseline(), Moss((50.0, 25.0)), Moss((50.0, 25.0), attention=AttentionSpec(mode="sa")), ScaleSkip(1)],
    ids=lambda m: f"{m.name}-{m.attention.mode}",
)
def test_dry_run_counts_the_flops_of_a_real_generation(gen, method):
    with FlopCounterMode(display=False) as counter:
        real = run(gen, method, decode=False)
    dry = dry_run(gen, method, batch_size=2)
    assert dry.flops == counter.get_total_flops()
    assert all(f > 0 for f in dry.flops_per_pass)
    assert dry.tokens_per_pass == real.stats.tokens_per_pass
    assert len(dry.flops_per_pass) == real.stats.forward_passes
    assert dry.kv_cache_bytes == real.stats.kv_cache_bytes
    assert dry.skipped_scales == real.stats.skipped_scales
