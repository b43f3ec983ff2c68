"""Bitwise sampling with top-k / top-p, and the two seeding modes.

Seeding modes:

* ``official`` — one generator for the whole batch, seeded with the first image's seed, and one
  ``torch.multinomial`` call per scale over ``(B·L·d, 2)``: the call shapes of the official Infinity loop, so a run
  on the same device reproduces its bits exactly;
* ``per_image`` — every image has its own generator seeded with its own seed and its own multinomial call per
  scale, so its pixels depend neither on batch size, nor on batch composition, nor on the number of GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SEEDING_MODES = ("official", "per_image")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; ``cfg`` and ``tau`` are a number or one value per scale (Infinity's release defaults).

    ``cfg`` is the guidance weight (1 = no guidance: the batch is not doubled), ``tau`` the temperature,
    ``top_k``/``top_p`` the truncation (0 = off), ``seeding`` one of :data:`SEEDING_MODES`. A family reads the
    fields it has (per-scale values, or its own schedule of them).
    """

    cfg: float | tuple[float, ...] = 3.0
    tau: float | tuple[float, ...] = 0.5
    top_k: int = 900
    top_p: float = 0.97
    seeding: str = "per_image"

    def __post_init__(self) -> None:
        if self.seeding not in SEEDING_MODES:
            raise ValueError(f"seeding must be one of {SEEDING_MODES}, got {self.seeding!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1] (0 = off), got {self.top_p!r}")

    @property
    def per_image(self) -> bool:
        return self.seeding == "per_image"

    def per_scale(self, name: str, num_scales: int) -> list[float]:
        """``cfg`` or ``tau`` as one float per scale, checked against the schedule."""
        value = getattr(self, name)
        values = [value] * num_scales if isinstance(value, int | float) else list(value)
        if len(values) != num_scales:
            raise ValueError(f"{name} has {len(values)} values but the schedule has {num_scales} scales")
        if name == "tau" and not all(v > 0 for v in values):
            raise ValueError(f"tau must be > 0 at every scale, got {values}")
        return [float(v) for v in values]


def make_generators(seeds: Sequence[int], mode: str, device: torch.device | str) -> list[torch.Generator]:
    """The generator(s) of one batch: one for ``official`` mode, one per image for ``per_image``."""
    if mode not in SEEDING_MODES:
        raise ValueError(f"seeding must be one of {SEEDING_MODES}, got {mode!r}")
    if not seeds:
        raise ValueError("seeds must hold one seed per image")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63:
            raise ValueError(f"seeds must be non-negative ints below 2**63, got {s!r}")
    chosen = [seeds[0]] if mode == "official" else list(seeds)
    return [torch.Generator(device=device).manual_seed(s) for s in chosen]


def filter_top_k_top_p_(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask ``(..., V)`` logits outside the top-k / nucleus to -inf, in place, exactly as the release does."""
    v = logits.shape[-1]
    if top_k > 0:
        k = min(top_k, v)
        threshold = logits.topk(k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < threshold, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False  # the most likely value always stays
        logits.masked_fill_(remove.scatter(sorted_idx.ndim - 1, sorted_idx, remove), -torch.inf)
    return logits


def sample_bits(
    logits: torch.Tensor, generators: Sequence[torch.Generator], top_k: int = 0, top_p: float = 0.0
) -> torch.Tensor:
    """Sample ``(B, L, d)`` bits from ``(B, L, 2·d)`` logits (``[..., 2k + b]`` = bit k takes value b).

    With one generator: one multinomial call over the whole batch (official call shapes). With one generator
    per image: one call per image, each consuming only its own generator.
    """
    b, n, v2 = logits.shape
    if logits.is_meta:  # a dry run (accounting): shapes only
        return torch.empty(b, n, v2 // 2, dtype=torch.long, device="meta")
    pairs = filter_top_k_top_p_(logits.reshape(b, -1, 2), top_k, top_p)
    probs = pairs.softmax(dim=-1)
    if len(generators) == 1:
        draws = torch.multinomial(probs.view(-1, 2), 1, replacement=True, generator=generators[0])
        return draws.view(b, n, v2 // 2)
    if len(generators) != b:
        raise ValueError(f"need one generator per image ({b}) or one for the batch, got {len(generators)}")
    out = [
        torch.multinomial(probs[i], 1, replacement=True, generator=g).view(n, v2 // 2)
        for i, g in enumerate(generators)
    ]
    return torch.stack(out)
