"""Infinity's dynamic-resolution scale schedules (``infinity/utils/dynamic_resolution.py`` of the release).

Every aspect-ratio template has 13 token grids; the 256², 512², 768² and 1024² schedules are its first 7, 10, 12
and 13 grids ('0.06M', '0.25M', '0.60M', '1M'). One VAE token covers 16×16 pixels. Inverse ratios are the
transposed grids, keyed ``int(1/ratio·1000)/1000`` exactly as the official table keys them.

A config may instead carry its own square schedule (``InfinityConfig.scale_sides``, e.g. the testbed's 128²
one): :func:`sides_schedule` builds it, with the pixels per token of that config's VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

Grid = tuple[int, int]

VAE_STRIDE = 16

# h/w ratio -> 13 (h, w) grids, from the official table (FoundationVision/Infinity, dynamic_resolution.py).
_RATIO_TO_GRIDS: dict[float, tuple[Grid, ...]] = {
    1.000: ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)),
    1.250: ((1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)),
    1.333: ((1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36), (60, 45), (72, 54)),
    1.500: ((1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32), (63, 42), (78, 52)),
    1.750: ((1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32), (70, 40), (84, 48)),
    2.000: ((1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30), (74, 37), (90, 45)),
    2.500: ((1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26), (80, 32), (100, 40)),
    3.000: ((1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24), (90, 30), (111, 37)),
}  # fmt: skip

#: pixel-budget name -> number of leading grids; and the square resolution each one gives.
PIXEL_BUDGETS: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
RESOLUTION_TO_BUDGET: dict[int, str] = {256: "0.06M", 512: "0.25M", 768: "0.60M", 1024: "1M"}


def _full_table() -> dict[float, tuple[Grid, ...]]:
    table: dict[float, tuple[Grid, ...]] = {}
    for ratio, grids in _RATIO_TO_GRIDS.items():
        table[ratio] = grids
        if ratio != 1.0:
            table[int(1 / ratio * 1000) / 1000] = tuple((w, h) for h, w in grids)
    return table


TEMPLATES: dict[float, tuple[Grid, ...]] = _full_table()
ASPECT_RATIOS: tuple[float, ...] = tuple(sorted(TEMPLATES))


@dataclass(frozen=True)
class InfinitySchedule:
    """One generation's token grids plus what the model needs to place them.

    ``rope_grid`` is the last grid of the template's '1M' schedule: Infinity's RoPE positions are always
    expressed on it, whatever resolution is generated. ``token_stride``: image pixels per token side (16 for
    every release: the d32 VAE is 16× down, the 8B's is 8× down with 2×2 patchify; a config's own schedule
    sets its VAE's).
    """

    aspect_ratio: float  # the template's h/w
    budget: str
    grids: tuple[Grid, ...]
    rope_grid: Grid
    token_stride: int = VAE_STRIDE

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.grids)

    @property
    def pixels(self) -> tuple[int, int]:
        h, w = self.grids[-1]
        return h * self.token_stride, w * self.token_stride

    def as_3d(self) -> list[tuple[int, int, int]]:
        """The official ``[(1, h, w), ...]`` form."""
        return [(1, h, w) for h, w in self.grids]


def nearest_aspect_ratio(h_div_w: float) -> float:
    """The official template nearest to the requested height/width ratio."""
    if not isinstance(h_div_w, int | float) or isinstance(h_div_w, bool) or not h_div_w > 0:
        raise ValueError(f"aspect_ratio must be a positive number (height / width), got {h_div_w!r}")
    return min(ASPECT_RATIOS, key=lambda r: abs(r - h_div_w))


def get_schedule(resolution: int | str = 1024, aspect_ratio: float = 1.0) -> InfinitySchedule:
    """The schedule for a resolution (256, 512, 768, 1024 or a budget name such as '1M') and an h/w ratio.

    The ratio snaps to the nearest of the 15 official templates, as the official scripts do.
    """
    if isinstance(resolution, str) and resolution in PIXEL_BUDGETS:
        budget = resolution
    elif resolution in RESOLUTION_TO_BUDGET:
        budget = RESOLUTION_TO_BUDGET[resolution]  # type: ignore[index]
    else:
        allowed = sorted(RESOLUTION_TO_BUDGET) + sorted(PIXEL_BUDGETS)
        raise ValueError(f"unsupported resolution {resolution!r} for Infinity; choose one of {allowed}")
    ratio = nearest_aspect_ratio(aspect_ratio)
    template = TEMPLATES[ratio]
    return InfinitySchedule(ratio, budget, template[: PIXEL_BUDGETS[budget]], template[-1])


def sides_schedule(sides: tuple[int, ...], token_stride: int, budget: str) -> InfinitySchedule:
    """A square schedule of the given grid sides (coarse to fine), RoPE positions on its own last grid.

    For a config that carries its own schedule (``InfinityConfig.scale_sides``): it is trained on exactly these
    grids, so there is no larger '1M' grid to normalise positions to. ``budget`` names it (the config's name).
    """
    grids = tuple((s, s) for s in sides)
    return InfinitySchedule(1.0, budget, grids, grids[-1], token_stride)
