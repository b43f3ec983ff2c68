"""Torch reference for 2D RoPE over mixed-scale token sets, and the checks shared with the Triton path.

Tables: the cos/sin of every token of every scale of a schedule, concatenated in scale order (table row
``offsets[s] + i * w_s + j`` holds token ``(i, j)`` of scale ``s``), one column per rotary pair, float32.

Application: each packed token carries its scale index and its ``(row, col)`` on that scale's own grid, so one
sequence may mix tokens of several scales in any order, and positions may differ per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from moss_attention.schemes import Grid, Pairing, RopeScheme, check_schedule, check_scheme, scale_offsets

Layout = Literal["bnhd", "bhnd"]
LAYOUTS: tuple[str, ...] = ("bnhd", "bhnd")
ROPE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True, eq=False)
class RopeTables:
    """Precomputed cos/sin for every scale of a schedule (build with :func:`precompute_rope_tables`).

    ``cos``/``sin``: ``(T, rotary_dim // 2)`` float32, ``T`` = total tokens of the schedule.
    ``scale_starts``/``scale_heights``/``scale_widths``: ``(S,)`` int32 on the tables' device, read by kernels.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    grids: tuple[Grid, ...]
    offsets: tuple[int, ...]
    pairing: Pairing
    scale_starts: torch.Tensor
    scale_heights: torch.Tensor
    scale_widths: torch.Tensor

    @classmethod
    def from_cos_sin(
        cls, cos: torch.Tensor, sin: torch.Tensor, grids: Sequence[Grid], pairing: Pairing
    ) -> RopeTables:
        offsets = scale_offsets(grids)
        device = cos.device
        return cls(
            cos=cos.contiguous(),
            sin=sin.contiguous(),
            grids=tuple(grids),
            offsets=offsets,
            pairing=pairing,
            scale_starts=torch.tensor(offsets[:-1], dtype=torch.int32, device=device),
            scale_heights=torch.tensor([h for h, _ in grids], dtype=torch.int32, device=device),
            scale_widths=torch.tensor([w for _, w in grids], dtype=torch.int32, device=device),
        )

    @property
    def rotary_dim(self) -> int:
        return 2 * self.cos.shape[1]

    @property
    def num_scales(self) -> int:
        return len(self.grids)

    @property
    def device(self) -> torch.device:
        return self.cos.device

    def scale_table(self, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h * w, rotary_dim // 2)`` cos and sin of one scale, row-major."""
        start, end = self.offsets[scale], self.offsets[scale + 1]
        return self.cos[start:end], self.sin[start:end]

    def to(self, device: torch.device | str) -> RopeTables:
        return RopeTables.from_cos_sin(self.cos.to(device), self.sin.to(device), self.grids, self.pairing)


def scale_positions(scheme: RopeScheme, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference-grid ``(row, col)`` float32 positions of every token of one scale, row-major, ``(h * w,)`` each."""
    h, w = grid
    step_h, step_w = scheme.position_steps(grid)
    # float32 multiply (Infinity multiplies an int arange by a Python float, which torch does in float32).
    rows = torch.arange(h, dtype=torch.float32) * torch.tensor(step_h, dtype=torch.float32)
    cols = torch.arange(w, dtype=torch.float32) * torch.tensor(step_w, dtype=torch.float32)
    if scheme.round_positions:
        rows, cols = rows.round(), cols.round()  # half to even, as torch.round
    return rows[:, None].expand(h, w).reshape(-1), cols[None, :].expand(h, w).reshape(-1)


def precompute_rope_tables(
    scheme: RopeScheme, schedule: Sequence[Sequence[int]], device: torch.device | str | None = None
) -> RopeTables:
    """Torch reference: cos/sin tables for every scale of ``schedule`` (a list of ``(h, w)`` grids)."""
    check_scheme(scheme)
    grids = check_schedule(schedule)
    positions = [scale_positions(scheme, grid) for grid in grids]
    rows = torch.cat([r for r, _ in positions])
    cols = torch.cat([c for _, c in positions])
    axes = scheme.pair_axes()
    angles = (
        torch.where(axes[None, :] == 0, rows[:, None], cols[:, None]) * scheme.pair_frequencies()[None, :]
    )
    return RopeTables.from_cos_sin(angles.cos().to(device), angles.sin().to(device), grids, scheme.pairing)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)} dtype {t.dtype} device {t.device}"


def _check_index(
    name: str, t: torch.Tensor, batch: int, tokens: int, device: torch.device, allow_1d: bool = True
) -> torch.Tensor:
    if (
        not isinstance(t, torch.Tensor)
        or t.dtype.is_floating_point
        or t.dtype.is_complex
        or t.dtype == torch.bool
    ):
        raise ValueError(f"{name} must be an integer tensor, got {t!r:.80}")
    if t.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {t.device}")
    allowed = [(batch, tokens)] + ([(tokens,)] if allow_1d else [])
    if tuple(t.shape) not in allowed:
        raise ValueError(f"{name} must have shape (N,) or (B, N) = {allowed[::-1]}, got {tuple(t.shape)}")
    return t.expand(batch, tokens)


def prepare_rope_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    tables: RopeTables,
    scale_ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    layout: str,
    check_bounds: bool,
    dtypes: Sequence[torch.dtype] = (*ROPE_DTYPES, torch.float64),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate arguments and return ``(B, N, H, D)`` views of q and k plus ``(B, N)`` index tensors.

    ``check_bounds`` compares positions with their scale's grid, which reads values back from the device
    (one synchronisation); turn it off in a hot loop once the producer is trusted.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(tables, RopeTables):
        raise ValueError(
            f"tables must be RopeTables (see precompute_rope_tables), got {type(tables).__name__}"
        )
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor in layout {layout!r}, got {t!r:.80}")
        if t.dtype not in dtypes:
            raise ValueError(f"{name}.dtype must be one of {tuple(dtypes)}, got {t.dtype}")
    if layout == "bhnd":
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    if q.dtype != k.dtype or q.device != k.device:
        raise ValueError(f"q and k must share dtype and device, got q {_describe(q)} and k {_describe(k)}")
    (batch, tokens, _, dim), kshape = q.shape, k.shape
    for axis, label in ((0, "batch size B"), (1, "token count N"), (2, "head count H"), (3, "head dim D")):
        if kshape[axis] != q.shape[axis]:
            raise ValueError(
                f"q and k must have the same {label}, got q {tuple(q.shape)} and k {tuple(kshape)}"
            )
    if dim != tables.rotary_dim:
        raise ValueError(
            f"head dim D of q and k ({dim}) must equal the tables' rotary_dim ({tables.rotary_dim}); "
            "build the tables for this head dim"
        )
    if tables.device != q.device:
        raise ValueError(f"tables are on {tables.device} but q is on {q.device}; use tables.to(q.device)")
    scale_ids = _check_index("scale_ids", scale_ids, batch, tokens, q.device)
    rows = _check_index("rows", rows, batch, tokens, q.device)
    cols = _check_index("cols", cols, batch, tokens, q.device)
    if check_bounds and batch * tokens > 0:
        _check_positions(tables, scale_ids, rows, cols)
    return q, k, scale_ids, rows, cols


def _check_positions(
    tables: RopeTables, scale_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> None:
    bad_scale = (scale_ids < 0) | (scale_ids >= tables.num_scales)
    if bool(bad_scale.any()):
        b, n = (int(v) for v in bad_scale.nonzero()[0])
        raise ValueError(
            f"scale_ids must lie in [0, {tables.num_scales}) (the schedule has {tables.num_scales} scales), "
            f"got {int(scale_ids[b, n])} at (b={b}, n={n})"
        )
    sid = scale_ids.long()
    for name, pos, limit in (
        ("rows", rows, tables.scale_heights[sid]),
        ("cols", cols, tables.scale_widths[sid]),
    ):
        bad = (pos < 0) | (pos >= limit)
        if bool(bad.any()):
            b, n = (int(v) for v in bad.nonzero()[0])
            s = int(sid[b, n])
            raise ValueError(
                f"{name} must lie inside each token's scale grid; token (b={b}, n={n}) of scale {s} "
                f"(grid {tables.grids[s][0]}x{tables.grids[s][1]}) has {name[:-1]} {int(pos[b, n])}"
            )


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairing: Pairing) -> torch.Tensor:
    """Rotate pairs of the last dim of ``x`` by angles with these cos/sin (broadcast over leading dims).

    Computed in float32 (float64 for float64 input) and cast back to ``x.dtype``.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf, cos, sin = x.to(compute), cos.to(compute), sin.to(compute)
    if pairing == "interleaved":
        first, second = xf[..., 0::2], xf[..., 1::2]
    else:
        first, second = xf.chunk(2, dim=-1)
    out_first = first * cos - second * sin
    out_second = first * sin + second * cos
    if pairing == "interleaved":
        out = torch.stack([out_first, out_second], dim=-1).flatten(-2)
    else:
        out = torch.cat([out_first, out_second], dim=-1)
    return out.to(x.dtype)


def table_rows(
    tables: RopeTables, scale_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``(B, N)`` int64 table row of every packed token."""
    sid = scale_ids.long()
    return tables.scale_starts[sid].long() + rows.long() * tables.scale_widths[sid].long() + cols.long()


def apply_rope_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    tables: RopeTables,
    scale_ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    layout: Layout = "bnhd",
    inplace: bool = False,
    check_bounds: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference: rotate q and k of a packed mixed-scale token set.

    q, k: ``(B, N, H, D)`` (or ``(B, H, N, D)`` with ``layout="bhnd"``), D = ``tables.rotary_dim``.
    scale_ids: ``(N,)`` or ``(B, N)`` index into the tables' schedule; rows, cols: ``(N,)`` or ``(B, N)``
    position of each token on its own scale's grid. Returns ``(q, k)`` rotated, in q's layout; with
    ``inplace=True`` the inputs are overwritten and returned.
    """
    q4, k4, scale_ids, rows, cols = prepare_rope_inputs(
        q, k, tables, scale_ids, rows, cols, layout, check_bounds
    )
    index = table_rows(tables, scale_ids, rows, cols)
    cos, sin = (
        tables.cos[index][:, :, None, :],
        tables.sin[index][:, :, None, :],
    )  # (B, N, 1, P): same for all heads
    q_rot = rotate_pairs(q4, cos, sin, tables.pairing)
    k_rot = rotate_pairs(k4, cos, sin, tables.pairing)
    if inplace:
        q4.copy_(q_rot)
        k4.copy_(k_rot)
        return q, k
    if layout == "bhnd":
        q_rot, k_rot = q_rot.transpose(1, 2), k_rot.transpose(1, 2)
    return q_rot, k_rot
