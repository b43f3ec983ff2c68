"""Schedules the dispatch tests use (copied from the official model code's tables; dispatch itself knows none)."""

INFINITY_1024 = [(s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)]
HART_1024 = [(s, s) for s in (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)]

# The MoSs paper's Infinity thresholds, as test data (the registered presets live in moss_models.infinity).
PAPER_INFINITY = {
    "k2": (50.0, 25.0),
    "k3": (50.0, 15.0, 5.0),
    "k4": (80.0, 70.0, 30.0, 10.0),
    "k5": (90.0, 50.0, 15.0, 10.0, 5.0),
}


def paper_plan(name: str):
    """The Infinity 1024² plan of a paper preset."""
    from moss_dispatch import ScalePlan

    thresholds = PAPER_INFINITY[name]
    return ScalePlan(INFINITY_1024, len(INFINITY_1024) - len(thresholds), thresholds)
