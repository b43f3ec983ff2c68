"""MoSs threshold presets, registered by each model family (``moss_models/<family>/presets.py``)."""

from __future__ import annotations

import contextlib
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


# FasterVAR's rank ratios: per energy threshold ``alpha`` (a string, as its code names them), per low-rank scale
# (a schedule index, negative from the end) and per block group, the fraction of a scale's tokens kept as rank.
_RANK_RATIOS: dict[str, dict[str, dict[int, tuple[float, ...]]]] = {}


def register_rank_ratios(family: str, tables: Mapping[str, Mapping[int, tuple[float, ...]]]) -> None:
    """Register a family's FasterVAR rank tables (``{"0.96": {-3: (r_group0, r_group1, ...), ...}, ...}``)."""
    fam = _RANK_RATIOS.setdefault(family, {})
    for alpha, table in tables.items():
        fam[str(alpha)] = {int(s): tuple(float(r) for r in ratios) for s, ratios in table.items()}


def preset_rank_ratios(family: str, alpha: str) -> dict[int, tuple[float, ...]]:
    """The registered FasterVAR rank table of ``alpha`` for a family."""
    if family not in _RANK_RATIOS:
        raise ValueError(
            f"no FasterVAR rank presets for model family {family!r} (families with presets: "
            f"{sorted(_RANK_RATIOS)}); give the ranks explicitly (moss.ranks)"
        )
    tables = _RANK_RATIOS[family]
    key = str(alpha)
    if key not in tables:  # "0.9" names the preset "0.90": alphas are matched by value
        with contextlib.suppress(ValueError):  # not a number: refused below
            key = next((k for k in tables if float(k) == float(alpha)), key)
    if key not in tables:
        raise ValueError(
            f"unknown FasterVAR alpha {alpha!r} for family {family!r}; choose one of {sorted(tables)}"
        )
    return dict(tables[key])


# The peers' released settings per family (``{"fastvar": {"prune": ..., "cache_scale": ...}, ...}``): the
# ``conf/moss/<peer>.yaml`` fields read them through ``${peer_setting:${model.family},<peer>,<field>}``, so
# ``model=hart moss=fastvar`` is FastVAR's released HART setting and ``model=infinity_2b moss=fastvar`` its Infinity
# one. A family without its own (VAR: the peers released none) gets Infinity's, the transplant the README describes.
_PEER_SETTINGS: dict[str, dict[str, dict[str, object]]] = {}
PEER_SETTINGS_DEFAULT_FAMILY = "infinity"


def register_peer_settings(family: str, method: str, settings: Mapping[str, object]) -> None:
    """Register a family's released setting of a peer method (field name → value, as the method takes it)."""
    _PEER_SETTINGS.setdefault(family, {})[method] = dict(settings)


def peer_setting(family: str, method: str, field: str) -> object:
    """One field of a peer's released setting for a family (tuples as lists, for configs)."""
    chosen = family if method in _PEER_SETTINGS.get(family, {}) else PEER_SETTINGS_DEFAULT_FAMILY
    settings = _PEER_SETTINGS.get(chosen, {}).get(method)
    if settings is None:
        raise ValueError(f"no released {method} setting is registered (families: {sorted(_PEER_SETTINGS)})")
    if field not in settings:
        raise ValueError(f"{method}'s {chosen} setting has no field {field!r}; it has {sorted(settings)}")
    return _as_lists(settings[field])


def _as_lists(value: object) -> object:
    return [_as_lists(v) for v in value] if isinstance(value, list | tuple) else value
