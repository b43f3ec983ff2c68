"""Token selection inside one scale, for the peers that prune or sample tokens (FastVAR, FasterVAR).

MoSs dispatches positions of the drafted *latent* to later scales; the peers choose among the tokens of the scale
being computed, from its hidden states ``(R, L, C)`` (``R`` rows: images, and CFG rows). Pure torch, no model:

* :func:`mean_deviation_score` and :func:`keep_top` — FastVAR's pivotal-token choice (its "DC-based high-frequency
  proxy": keep the tokens farthest from the scale's mean token), with :func:`num_kept` its token count;
* :func:`norm_sampling_probs` and :func:`sample_rows` — FasterVAR's representative tokens: rows drawn without
  replacement with probability proportional to their squared norm, from explicit generators.

Every function validates shapes only (no value is read back to the host), so it can run inside a generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_tokens(x: torch.Tensor, name: str = "tokens") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (rows, L, C) tensor, got {got}")


def num_kept(num_tokens: int, ratio: float) -> int:
    """Tokens kept when a fraction ``ratio`` of ``num_tokens`` is pruned: ``L − int(L·ratio)`` (FastVAR's count)."""
    if not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio < 1:
        raise ValueError(f"a pruning ratio must be in [0, 1), got {ratio!r}")
    return num_tokens - int(num_tokens * ratio)


def mean_deviation_score(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(R, L)``: each token's squared distance from its row's mean token over the ``grid`` (FastVAR's score).

    The mean is taken as FastVAR takes it (global average pooling of the ``(R, C, h, w)`` map), so the scores —
    and the order of equal-looking tokens — are the official ones.
    """
    _check_tokens(tokens)
    r, n, c = tokens.shape
    h, w = (int(v) for v in grid)
    if h * w != n:
        raise ValueError(f"a {h}×{w} grid has {h * w} tokens, the tokens tensor has {n}")
    mean = F.adaptive_avg_pool2d(tokens.view(r, h, w, c).permute(0, 3, 1, 2), (1, 1))
    mean = mean.permute(0, 2, 3, 1).reshape(r, 1, c)
    return torch.sum((tokens - mean) ** 2, dim=-1)


def keep_top(score: torch.Tensor, count: int) -> torch.Tensor:
    """``(R, count)`` int64: per row, the positions of the ``count`` highest scores, highest first.

    The kept tokens stay in score order (as FastVAR keeps them), not in position order.
    """
    if score.ndim != 2:
        raise ValueError(f"score must be (rows, L), got shape {tuple(score.shape)}")
    if not 1 <= count <= score.shape[1]:
        raise ValueError(f"count must be in [1, {score.shape[1]}], got {count}")
    return torch.argsort(score, dim=1, descending=True)[:, :count]


def norm_sampling_probs(tokens: torch.Tensor, c: float = 0.1) -> torch.Tensor:
    """``(R, L)`` fp32 row-sampling probabilities ∝ squared token norm (FasterVAR's, with its constant ``c``)."""
    _check_tokens(tokens)
    x = tokens.float()
    row_norm2 = torch.norm(x, dim=2) ** 2
    prob = c * row_norm2 / row_norm2.sum(dim=1, keepdim=True)
    return prob / prob.sum(dim=1, keepdim=True)


def sample_rows(
    probs: torch.Tensor, count: int, generators: Sequence[torch.Generator | None], rows_per_generator: int
) -> torch.Tensor:
    """``(R, count)`` int64 positions drawn without replacement, ``rows_per_generator`` rows per generator.

    Generator ``g`` draws for rows ``g, g + G, g + 2G, …`` (``G = len(generators)``): an image's CFG rows use
    the image's own generator, in one call, so one image's draws depend only on its own seed.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (rows, L), got shape {tuple(probs.shape)}")
    if not 1 <= count <= probs.shape[1]:
        raise ValueError(f"count must be in [1, {probs.shape[1]}], got {count}")
    g = len(generators)
    if g * rows_per_generator != probs.shape[0]:
        raise ValueError(f"{g} generators × {rows_per_generator} rows do not cover {probs.shape[0]} rows")
    if g == 1:
        return torch.multinomial(probs, count, replacement=False, generator=generators[0])
    out = torch.empty(probs.shape[0], count, dtype=torch.long, device=probs.device)
    for i, gen in enumerate(generators):
        rows = torch.arange(i, probs.shape[0], g, device=probs.device)
        out[rows] = torch.multinomial(probs[rows], count, replacement=False, generator=gen)
    return out
