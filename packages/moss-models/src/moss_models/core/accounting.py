"""Exact accounting from the generation path itself: a dry run of the generator on the meta device.

FLOPs and KV-cache bytes are not estimated from a second copy of the loop: :func:`dry_run` builds the family on
the meta device (real modules, no memory), runs :class:`~moss_models.core.generator.NextScaleGenerator` with the
same method, and counts every pass with ``torch.utils.flop_counter.FlopCounterMode``. Token counts of every
method here (MoSs, FastVAR's kept tokens, FasterVAR's ranks) do not depend on the image, so the count is exact
for any prompt of ``text_tokens`` tokens. The VAE decode is not included (the paper's backbone); the
conditioning's FLOPs are added to the first pass.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

from torch.utils.flop_counter import FlopCounterMode

from moss_models.core.family import ScaleFamily
from moss_models.core.generator import GenerationStats, allocate_cache
from moss_models.core.kv_cache import KVCache
from moss_models.core.methods import Baseline, Method
from moss_models.core.sampling import SamplingConfig


@dataclass
class DryRun(GenerationStats):
    """The stats of a meta-device generation, plus the FLOPs of every pass (the conditioning's in the first)."""

    flops_per_pass: list[int] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(self.flops_per_pass)


# Dry runs by (family identity, method, settings): a 2B-size run takes seconds of Python meta kernels, and a
# benchmark or a test suite asks for the same ones again.
_DRY_RUNS: dict[tuple, DryRun] = {}


def _meta(family: Any) -> ScaleFamily:
    family = getattr(family, "family", family)  # a generator or a family
    return family if family.device.type == "meta" else family.dry_run_family()


def dry_run(
    family: Any,
    method: Method | None = None,
    *,
    resolution: Any = None,
    aspect_ratio: float = 1.0,
    batch_size: int = 1,
    sampling: SamplingConfig | None = None,
    text_tokens: int | None = None,
) -> DryRun:
    """FLOPs per pass, tokens per pass and KV bytes of one generation, from a meta-device run of the generator.

    ``text_tokens``: the prompt length the conditioning's FLOPs are counted for (None: the family's default).
    """
    from moss_models.core.generator import NextScaleGenerator

    method = method or Baseline()
    sampling = sampling or SamplingConfig()
    base = getattr(family, "family", family)
    identity = base.accounting_key() if hasattr(base, "accounting_key") else None
    key = None
    if identity is not None:
        key = (
            identity,
            repr(method),
            repr(resolution),
            float(aspect_ratio),
            batch_size,
            repr(sampling),
            text_tokens,
        )
        if key in _DRY_RUNS:  # a pure function of these: meta tensors carry no values
            return copy.deepcopy(_DRY_RUNS[key])
    meta = _meta(family)
    generator = NextScaleGenerator(meta)
    cond = meta.dry_run_condition(batch_size, text_tokens)
    counts: dict[int | None, int] = {}

    @contextlib.contextmanager
    def count(i: int | None):
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        counts[i] = counter.get_total_flops()

    result = generator.generate(
        cond, list(range(batch_size)), method=method, resolution=resolution, aspect_ratio=aspect_ratio,
        sampling=sampling, decode=False, instrument=count,
    )  # fmt: skip
    stats = result.stats
    passes = [counts[i] for i in range(stats.forward_passes)]
    passes[0] += counts.get(None, 0)
    run = DryRun(
        list(stats.tokens_per_pass), stats.kv_cache_bytes, {}, stats.skipped_scales, flops_per_pass=passes
    )
    if key is not None:
        _DRY_RUNS[key] = copy.deepcopy(run)
    return run


def estimate_kv_cache(
    family: Any,
    method: Method | None = None,
    *,
    resolution: Any = None,
    aspect_ratio: float = 1.0,
    batch_size: int = 1,
    guidance: bool = True,
) -> KVCache:
    """The KV cache a generation allocates, built on the meta device the way the generator builds it."""
    meta = _meta(family)
    schedule = meta.schedule(resolution, aspect_ratio)
    plan = (method or Baseline()).plan(schedule.grids)
    return allocate_cache(meta, plan, batch_size, guidance)
