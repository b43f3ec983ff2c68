"""MoSs threshold presets for VAR: found by the offline search, and UNTUNED.

The MoSs paper gives no thresholds for VAR. ``k2`` and ``k3`` are what ``tools/search_thresholds.py`` found on
``var_tiny`` with seeded random weights (fidelity to the full model as the objective); each file in
``thresholds/`` says how (objective, budget, conditions, seeds, every evaluation, the commit). On random weights
the search only proves that it runs: these values say nothing about image quality on the released models. Rerun
the search on released weights (``model=var_d30``) and put its files here to replace them; ``UNTUNED`` is then
False.
"""

import json
from importlib import resources

from moss_models.core.presets import register_thresholds

SEARCHED = {name: f"var_tiny-{name}.json" for name in ("k2", "k3")}


def _load(file: str) -> dict:
    return json.loads(resources.files("moss_models.var").joinpath("thresholds", file).read_text("utf-8"))


FOUND = {name: _load(file) for name, file in SEARCHED.items()}
THRESHOLDS: dict[str, tuple[float, ...]] = {name: tuple(p["thresholds"]) for name, p in FOUND.items()}
#: True while any preset was searched on random weights
UNTUNED = not all(p["tuned"] for p in FOUND.values())

register_thresholds("var", THRESHOLDS)
