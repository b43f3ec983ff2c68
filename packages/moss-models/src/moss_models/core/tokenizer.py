"""Multi-scale residual quantisation: the encoder side of every next-scale tokenizer (teacher forcing, analyses).

Each scale quantises the residual left by the coarser ones at its own grid and subtracts its upsampled codes;
the family supplies the three operations (Infinity: area-down, sign bits to ``±1/√d`` codes, trilinear up; VAR
and HART: area-down, nearest codebook entry, bicubic up through φ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Grid = tuple[int, int]


def residual_quantize(
    latent: torch.Tensor,
    grids: Sequence[Grid],
    *,
    down: Callable[[torch.Tensor, Grid], torch.Tensor],
    quantize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    up: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Quantise ``latent`` ``(B, C, H, W)`` scale by scale over ``grids``.

    ``down(residual, grid)``: the residual at a scale's grid; ``quantize(r) → (samples, codes)`` on that grid;
    ``up(codes)``: codes back on the latent grid. Returns the summed codes and each scale's samples.
    """
    residual, summed = latent, torch.zeros_like(latent)
    samples = []
    for grid in grids:
        drawn, codes = quantize(down(residual, tuple(grid)))
        back = up(codes)
        residual = residual - back
        summed = summed + back
        samples.append(drawn)
    return summed, samples
