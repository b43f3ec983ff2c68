"""MoSs threshold presets, registered by each model family (``moss_models/<family>/presets.py``)."""

from __future__ import annotations

from collections.abc import Mapping

_THRESHOLDS: dict[str, dict[str, tuple[float, ...]]] = {}


def register_thresholds(family: str, presets: Mapping[str, tuple[float, ...]]) -> None:
    """Register a family's named threshold presets (``{"k2": (50, 25), ...}``)."""
    _THRESHOLDS.setdefault(family, {}).update({k: tuple(float(t) for t in v) for k, v in presets.items()})


def preset_names(family: str) -> list[str]:
    return sorted(_THRESHOLDS.get(family, {}))


def preset_thresholds(family: str, name: str) -> tuple[float, ...]:
    """The registered thresholds of ``name`` (``k2`` … ``k5``) for a family (``infinity``, ``hart``, …)."""
    if family not in _THRESHOLDS:
        raise ValueError(
            f"unknown model family {family!r} for threshold presets; choose one of {sorted(_THRESHOLDS)}"
        )
    if name not in _THRESHOLDS[family]:
        raise ValueError(
            f"unknown preset {name!r} for family {family!r}; choose one of {sorted(_THRESHOLDS[family])}"
        )
    return _THRESHOLDS[family][name]
