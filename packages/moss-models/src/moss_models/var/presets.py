"""MoSs threshold presets for VAR: UNTUNED placeholders.

The MoSs paper gives no thresholds for VAR. Until the offline threshold search (``tools/search_thresholds.py``)
has been run on the released weights and its presets saved, ``k2`` and ``k3`` are Infinity's paper values
copied as placeholders, so that every method runs; they are not claimed to be good for VAR. The search may
overwrite them by registering its own under the family ``var``.
"""

from moss_models.core.presets import register_thresholds

#: True until searched thresholds replace the placeholders below
UNTUNED = True

THRESHOLDS: dict[str, tuple[float, ...]] = {
    "k2": (50.0, 25.0),  # UNTUNED placeholder: Infinity's k2
    "k3": (50.0, 15.0, 5.0),  # UNTUNED placeholder: Infinity's k3
}

register_thresholds("var", THRESHOLDS)
