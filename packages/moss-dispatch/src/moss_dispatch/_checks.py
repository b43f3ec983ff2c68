"""Input validation shared by the dispatch modules.

Every check raises ``ValueError`` naming the argument and what is allowed, so a bad Hydra override or a
wrong tensor fails at the boundary with a message a user can act on, not deep inside a kernel.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from numbers import Real

import torch

Grid = tuple[int, int]

# Whether tensor values are checked (NaN/inf). Reading a value back from a GPU synchronises it, so a caller that
# produced the tensors itself and checks its result once (the generator of moss-models) turns this off for the
# inner loop of a generation; shapes, dtypes and settings are still checked, on the host.
_CHECK_VALUES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "moss_dispatch_check_values", default=True
)


@contextlib.contextmanager
def trusted_values() -> Iterator[None]:
    """Inside this block moss-dispatch does not read tensor values back to check them for NaN/inf (no device
    synchronisation); every other check still runs. For loops over tensors the caller made and validates once."""
    token = _CHECK_VALUES.set(False)
    try:
        yield
    finally:
        _CHECK_VALUES.reset(token)


def check_schedule(schedule: Sequence, name: str = "schedule") -> list[Grid]:
    """Normalise a scale schedule to a list of ``(h, w)`` grids.

    Accepts ``(h, w)`` pairs and Infinity-style ``(1, h, w)`` triples (the leading time axis is always 1 for
    images; anything else is rejected rather than silently dropped).
    """
    if isinstance(schedule, str | bytes) or not isinstance(schedule, Sequence) or len(schedule) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of (h, w) grids, got {schedule!r}")
    grids: list[Grid] = []
    for i, entry in enumerate(schedule):
        try:
            dims = tuple(entry)
        except TypeError:
            raise ValueError(f"{name}[{i}] must be an (h, w) pair, got {entry!r}") from None
        if len(dims) == 3:
            if dims[0] != 1:
                raise ValueError(f"{name}[{i}] = {entry!r}: a (t, h, w) entry must have t == 1 for images")
            dims = dims[1:]
        if len(dims) != 2 or not all(_is_int(d) and d >= 1 for d in dims):
            raise ValueError(f"{name}[{i}] must be an (h, w) pair of positive ints, got {entry!r}")
        grids.append((int(dims[0]), int(dims[1])))
    return grids


def check_thresholds(
    thresholds: Sequence, k: int, name: str = "thresholds", *, strict: bool = True
) -> tuple[float, ...]:
    """Percentile thresholds: k numbers in (0, 100], strictly decreasing (non-increasing if not ``strict``)."""
    if isinstance(thresholds, str | bytes) or not isinstance(thresholds, Sequence):
        raise ValueError(f"{name} must be a sequence of percentiles, got {thresholds!r}")
    values = []
    for i, t in enumerate(thresholds):
        if not _is_real(t) or not math.isfinite(float(t)):
            raise ValueError(f"{name}[{i}] must be a finite number in (0, 100], got {t!r}")
        values.append(float(t))
    if len(values) != k:
        raise ValueError(
            f"{name} has {len(values)} entries but there are k={k} refine scales; give one percentile per "
            f"refine scale, coarsest first (e.g. [50, 25] for k=2)"
        )
    for i, t in enumerate(values):
        if not 0.0 < t <= 100.0:
            raise ValueError(f"{name}[{i}] = {t:g} is outside (0, 100]")
    for i in range(1, len(values)):
        if values[i] > values[i - 1] or (strict and values[i] == values[i - 1]):
            order = "strictly decreasing" if strict else "non-increasing"
            raise ValueError(f"{name} must be {order} (coarsest refine scale first), got {list(values)}")
    return tuple(values)


def check_finite_tensor(x: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got a tensor of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not _CHECK_VALUES.get() or x.device.type == "meta":  # trusted, or a meta tensor (dry run): no values
        return
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf); only finite values allowed"
        )


def check_window(window: int, height: int, width: int, name: str = "window", odd: bool = True) -> int:
    if not _is_int(window) or window < 1:
        raise ValueError(f"{name} must be a positive int, got {window!r}")
    if odd and window % 2 == 0:
        raise ValueError(f"{name} must be odd so the window is centred on its token, got {window}")
    if window > min(height, width):
        raise ValueError(
            f"{name}={window} is bigger than the {height}x{width} map; use {name} <= {min(height, width)}"
        )
    return int(window)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)
