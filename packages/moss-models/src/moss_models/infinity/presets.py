"""The MoSs paper's thresholds for Infinity ("Implementation Details"), coarsest refine scale first."""

from moss_models.core.presets import register_thresholds

THRESHOLDS: dict[str, tuple[float, ...]] = {
    "k2": (50.0, 25.0),
    "k3": (50.0, 15.0, 5.0),
    "k4": (80.0, 70.0, 30.0, 10.0),
    "k5": (90.0, 50.0, 15.0, 10.0, 5.0),
}

register_thresholds("infinity", THRESHOLDS)
