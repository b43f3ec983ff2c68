"""Composite: scatter each refine scale's residual into an empty map, upsample it, add it onto the draft."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from moss_dispatch._checks import Grid, check_finite_tensor
from moss_dispatch.plan import Dispatch

#: Interpolation modes for the upsample. ``trilinear`` is Infinity's: the map is viewed as ``(B, C, 1, h, w)``
#: and resized to ``(1, H, W)``, which on a single frame equals bilinear. VAR and HART use ``bicubic``.
INTERPOLATION_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "trilinear", "area")


def scatter_to_grid(values: torch.Tensor, flat_index: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Scatter ``(B, n, C)`` values at row-major ``flat_index`` ``(B, n)`` into a zero ``(B, C, h, w)`` map."""
    if values.ndim != 3 or flat_index.shape != values.shape[:2]:
        raise ValueError(
            f"values must be (B, n, C) and flat_index (B, n) with matching B and n, got "
            f"{tuple(values.shape)} and {tuple(flat_index.shape)}"
        )
    b, _, c = values.shape
    h, w = grid
    out = values.new_zeros(b, h * w, c)
    out.scatter_(1, flat_index.unsqueeze(-1).expand(-1, -1, c), values)
    return out.transpose(1, 2).reshape(b, c, h, w)


def upsample_to(x: torch.Tensor, size: Grid, mode: str) -> torch.Tensor:
    """Resize ``(B, C, h, w)`` to ``size`` with the named mode; a map already at ``size`` is returned as is."""
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose one of {list(INTERPOLATION_MODES)}")
    if tuple(x.shape[-2:]) == tuple(size):
        # Skipping the no-op resize keeps the finest scale's residual bit-exact (Infinity adds the last scale's
        # codes without interpolation), which is what makes k=1 with band [100] reproduce the baseline.
        return x
    if mode == "trilinear":
        return F.interpolate(x.unsqueeze(2), size=(1, *size), mode="trilinear").squeeze(2)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    return F.interpolate(x, size=size, mode=mode)


def composite(
    draft: torch.Tensor,
    dispatch: Dispatch,
    residuals: torch.Tensor | Sequence[torch.Tensor],
    mode: str = "trilinear",
) -> torch.Tensor:
    """Add every refine scale's residual onto the draft.

    Args:
        draft: the drafted latent ``(B, C, H, W)`` (Infinity: the summed codes after the drafter scales).
        dispatch: the selection the residuals were computed for.
        residuals: the packed ``(B, N, C)`` residuals in dispatch order, or one ``(B, n_i, C)`` per refine scale.
        mode: interpolation mode for the upsample (see :data:`INTERPOLATION_MODES`).

    Returns ``draft + Σ_i upsample(scatter_i)``, added in scale order (coarsest first) like the baseline's
    running sum, in the draft's dtype.
    """
    check_finite_tensor(draft, 4, "draft", "(B, C, H, W)")
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose one of {list(INTERPOLATION_MODES)}")
    pieces = dispatch.split(residuals) if isinstance(residuals, torch.Tensor) else list(residuals)
    if len(pieces) != len(dispatch.selections):
        raise ValueError(f"residuals has {len(pieces)} scales, the dispatch has {len(dispatch.selections)}")
    b, c, h, w = draft.shape
    out = draft
    for i, (piece, sel) in enumerate(zip(pieces, dispatch.selections, strict=True)):
        if piece.shape != (b, sel.count, c):
            raise ValueError(
                f"residuals[{i}] (scale {sel.scale_index}, grid {sel.grid}) must have shape "
                f"({b}, {sel.count}, {c}), got {tuple(piece.shape)}"
            )
        dense = scatter_to_grid(piece.to(draft.dtype), sel.flat_index, sel.grid)
        out = out + upsample_to(dense, (h, w), mode)
    return out
