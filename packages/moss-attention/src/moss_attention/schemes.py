"""2D RoPE schemes: which angle each rotary pair of a token gets, and how pairs are laid out in the head dim.

A scheme describes the math once; the torch reference (:mod:`moss_attention.rope`) and the Triton
kernels (:mod:`moss_attention.ops.rope_2d`) both consume it, so a new model family only adds a scheme.

Every scheme reduces to the same table form: for a token at grid position ``(i, j)`` of a scale with grid
``(h, w)``, its position on a reference grid is ``(row, col) = (i * step_h, j * step_w)`` (optionally rounded
to integers), and rotary pair ``m`` rotates by ``angle[m] = (row if axis[m] == 0 else col) * freq[m]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

Pairing = Literal["interleaved", "half"]
"""How the two elements of rotary pair ``m`` sit in the head dim.

* ``"interleaved"`` (GPT-J, Infinity): ``(x[2m], x[2m+1])``;
* ``"half"`` (NeoX / HF ``rotate_half``): ``(x[m], x[m + D/2])``.
"""

PAIRINGS: tuple[str, ...] = ("interleaved", "half")

Grid = tuple[int, int]


@runtime_checkable
class RopeScheme(Protocol):
    """What the table builders need from a 2D RoPE variant.

    HART's variant (hart_var_fastvar.md §A.3) is not a scheme: its two pair members get different angles (a
    row and a column angle, so a pair is not a rotation), its positions carry a per-image offset (the last text
    position) and its text tokens use 1D RoPE. It lives in :mod:`moss_attention.hart_rope` (torch) and
    :mod:`moss_attention.ops.rope_half` (Triton), outside this protocol.
    """

    name: str
    rotary_dim: int
    pairing: Pairing
    round_positions: bool

    def pair_frequencies(self) -> torch.Tensor:
        """``(rotary_dim // 2,)`` float32: the frequency each rotary pair multiplies its position by."""
        ...

    def pair_axes(self) -> torch.Tensor:
        """``(rotary_dim // 2,)`` int32: 0 if the pair rotates with the row position, 1 with the column."""
        ...

    def position_steps(self, grid: Grid) -> tuple[float, float]:
        """Reference-grid distance between neighbouring tokens of a scale with this ``(h, w)`` grid."""
        ...


def _check_rotary_dim(rotary_dim: int) -> None:
    if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int) or rotary_dim <= 0 or rotary_dim % 4:
        raise ValueError(
            f"rotary_dim must be a positive multiple of 4 for 2D RoPE (half the pairs per axis), got {rotary_dim!r}"
        )


def _check_grid(grid: Sequence[int], name: str) -> Grid:
    if len(grid) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in grid):
        raise ValueError(f"{name} must be a pair of positive ints (h, w), got {grid!r}")
    return int(grid[0]), int(grid[1])


@dataclass(frozen=True)
class InfinityRope2D:
    """Infinity's 2D RoPE (``rope2d_normalized_by_hw=2``; infinity.md §3).

    ``inv_freq[k] = 1 / base^(2k / (D/2))`` for ``k < D/4``. A token ``(i, j)`` of an ``h x w`` scale sits at
    ``row = round(i * H / h)``, ``col = round(j * W / w)`` (float32 multiply, round half to even) on the
    reference grid ``(H, W)`` — the last scale of the 1M schedule of the aspect ratio, e.g. ``(64, 64)`` for
    square images, whatever schedule is used. Pairs are interleaved; pair ``m < D/4`` rotates by
    ``row * inv_freq[m]``, pair ``m >= D/4`` by ``col * inv_freq[m - D/4]``.
    """

    rotary_dim: int
    ref_grid: Grid = (64, 64)
    base: float = 10000.0
    name: str = "infinity"
    pairing: Pairing = "interleaved"
    round_positions: bool = True

    def __post_init__(self) -> None:
        _check_rotary_dim(self.rotary_dim)
        object.__setattr__(self, "ref_grid", _check_grid(self.ref_grid, "ref_grid"))
        if not (isinstance(self.base, int | float) and self.base > 1):
            raise ValueError(f"base must be a number > 1, got {self.base!r}")

    def inv_freq(self) -> torch.Tensor:
        half = self.rotary_dim // 2
        # Same op order and dtype as Infinity (int arange / half in float32, float32 pow, then 1 / x), so the
        # tables agree bit for bit with the official cache.
        exponent = torch.arange(0, half, 2, dtype=torch.int64) / half
        return 1.0 / (self.base**exponent)

    def pair_frequencies(self) -> torch.Tensor:
        inv_freq = self.inv_freq()
        return torch.cat([inv_freq, inv_freq])

    def pair_axes(self) -> torch.Tensor:
        quarter = self.rotary_dim // 4
        return torch.cat([torch.zeros(quarter, dtype=torch.int32), torch.ones(quarter, dtype=torch.int32)])

    def position_steps(self, grid: Grid) -> tuple[float, float]:
        h, w = _check_grid(grid, "grid")
        return self.ref_grid[0] / h, self.ref_grid[1] / w


_SCHEMES: dict[str, Callable[..., RopeScheme]] = {"infinity": InfinityRope2D}


def register_rope_scheme(name: str, factory: Callable[..., RopeScheme]) -> None:
    """Make ``rope_scheme(name, ...)`` build schemes with ``factory``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    _SCHEMES[name] = factory


def rope_scheme_names() -> tuple[str, ...]:
    return tuple(sorted(_SCHEMES))


def rope_scheme(name: str, /, **kwargs: object) -> RopeScheme:
    """Build a registered scheme by name, e.g. ``rope_scheme("infinity", rotary_dim=128)``."""
    try:
        factory = _SCHEMES[name]
    except KeyError:
        raise ValueError(f"scheme must be one of {rope_scheme_names()}, got {name!r}") from None
    return factory(**kwargs)


def check_scheme(scheme: RopeScheme) -> None:
    """Validate a (possibly user-defined) scheme once, before its tables are built."""
    if not isinstance(scheme, RopeScheme):
        raise ValueError(f"scheme must implement the RopeScheme protocol, got {type(scheme).__name__}")
    _check_rotary_dim(scheme.rotary_dim)
    if scheme.pairing not in PAIRINGS:
        raise ValueError(f"scheme.pairing must be one of {PAIRINGS}, got {scheme.pairing!r}")
    pairs = scheme.rotary_dim // 2
    freqs, axes = scheme.pair_frequencies(), scheme.pair_axes()
    if tuple(freqs.shape) != (pairs,) or tuple(axes.shape) != (pairs,):
        raise ValueError(
            f"scheme.pair_frequencies() and pair_axes() must have shape ({pairs},), "
            f"got {tuple(freqs.shape)} and {tuple(axes.shape)}"
        )
    if not bool(((axes == 0) | (axes == 1)).all()):
        raise ValueError("scheme.pair_axes() must contain only 0 (row) and 1 (column)")


def check_schedule(schedule: Sequence[Sequence[int]]) -> tuple[Grid, ...]:
    """A schedule is a non-empty list of ``(h, w)`` grids (Infinity's ``(1, h, w)`` triples are accepted)."""
    if isinstance(schedule, str | bytes) or len(schedule) == 0:
        raise ValueError(f"schedule must be a non-empty sequence of (h, w) grids, got {schedule!r}")
    grids = []
    for k, grid in enumerate(schedule):
        if len(grid) == 3 and grid[0] == 1:  # Infinity's (t=1, h, w) entries
            grid = grid[1:]
        grids.append(_check_grid(tuple(grid), f"schedule[{k}]"))
    return tuple(grids)


def scale_offsets(grids: Sequence[Grid]) -> tuple[int, ...]:
    """``(S + 1,)`` first table row of each scale, plus the total — scales are concatenated in order."""
    offsets = [0]
    for h, w in grids:
        offsets.append(offsets[-1] + h * w)
    return tuple(offsets)
