"""Method presets for the testbed: MoSs thresholds (placeholders until searched), and the peers' released
Infinity settings transplanted to its 10-scale schedule.

* MoSs ``k2`` … ``k5``: PLACEHOLDERS, the Infinity paper's values. The shipped weights are undertrained (issue 16:
  Shapes-GenEval 0.02), so a search on them would tune to noise. Once they are retrained, run
  ``tools/search_thresholds.py model=testbed search.k=K`` (its default conditions for the testbed are 20 Shapes
  captions of prompt seed 1, never the seed-0 evaluation set), put the thresholds here, fill :data:`SEARCH` and set
  :data:`UNTUNED` to False.
* FastVAR: Infinity-2B's released setting (prune 40 % at the 4th-last scale, 50 % at the 3rd-last, fill from the
  5th-last, skip the last two), on the testbed's scales (8², 10²; from 6²; skipping 13² and 16²), in blocks 1-3 of
  4 (the release prunes blocks 3-27 of 32: all but the first tenth).
* FasterVAR: Infinity's released structure (guidance 0 and low-rank tokens on the last three scales, the last two
  skipped, ``alpha`` "0.96"), with each rank table averaged over Infinity's block groups onto the testbed's two
  (groups 0-3 → 0, 4-7 → 1). FasterVAR calibrates its ratios per model; these are a transplant, as for VAR.
"""

from moss_models.core.presets import register_peer_settings, register_rank_ratios, register_thresholds
from moss_models.infinity.presets import FASTERVAR_RANK_RATIOS as INFINITY_RANK_RATIOS
from moss_models.infinity.presets import THRESHOLDS as INFINITY_PAPER_THRESHOLDS

#: the family name the testbed's presets are registered (and looked up) under
FAMILY = "testbed"

THRESHOLDS: dict[str, tuple[float, ...]] = dict(INFINITY_PAPER_THRESHOLDS)  # placeholders: the paper's values
#: how each preset was found (tools/search_thresholds.py's record, abridged)
SEARCH: dict[str, dict] = {}
#: True while the presets are the paper's Infinity values rather than a search on the trained testbed
UNTUNED = True

register_thresholds(FAMILY, THRESHOLDS)


def _two_groups(ratios: tuple[float, ...]) -> tuple[float, float]:
    half = len(ratios) // 2
    return (sum(ratios[:half]) / half, sum(ratios[half:]) / (len(ratios) - half))


FASTERVAR_RANK_RATIOS = {
    alpha: {scale: _two_groups(r) for scale, r in table.items()}
    for alpha, table in INFINITY_RANK_RATIOS.items()
}
FASTVAR = {
    "prune": ((-4, 0.4), (-3, 0.5)), "cache_scale": -5, "layers": (1, 4), "sublayers": ("sa", "ca", "ffn"),
    "skip": (-2, -1),
}  # fmt: skip
FASTERVAR = {"unguided": (-3, -2, -1), "low_rank": (-3, -2, -1), "alpha": "0.96", "skip": (-2, -1)}

register_rank_ratios(FAMILY, FASTERVAR_RANK_RATIOS)
register_peer_settings(FAMILY, "fastvar", FASTVAR)
register_peer_settings(FAMILY, "fastervar", FASTERVAR)
