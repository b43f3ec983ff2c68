"""Method presets for the testbed: MoSs thresholds searched on the trained weights, and the peers' released
Infinity settings transplanted to its 10-scale schedule.

* MoSs ``k2`` … ``k5``: found by ``tools/search_thresholds.py model=testbed search.k=K generation.batch_size=20`` on
  the shipped weights (the paper's top-down grid, step 10, fidelity objective: mean PSNR against ``moss=off`` at the
  same seeds, budget 1 dB below every refine scale at band 100; 20 Shapes captions of prompt seed 1, never the
  seed-0 evaluation set). The records are ``benchmarks/results/testbed/search-kK.json``. On the weights of
  2026-12-04b (run 9 continued on a GPU) k2 is [90, 30], k3 [90, 20, 10], k4 [90, 30, 20, 10]. For k5 the search
  ended at [100, 100, 30, 20, 10], whose coarsest refine scale has an empty band (it takes no tokens), which a
  preset may not have; k5 is the best point of the search's trace with a band for every scale,
  [100, 90, 30, 20, 10] (18.901 dB, 0.19 dB outside the 1 dB budget).
* FastVAR: Infinity-2B's released setting (prune 40 % at the 4th-last scale, 50 % at the 3rd-last, fill from the
  5th-last, skip the last two), on the testbed's scales (8², 10²; from 6²; skipping 13² and 16²), in blocks 1-3 of
  4 (the release prunes blocks 3-27 of 32: all but the first tenth).
* FasterVAR: Infinity's released structure (guidance 0 and low-rank tokens on the last three scales, the last two
  skipped, ``alpha`` "0.96"), with each rank table averaged over Infinity's block groups onto the testbed's two
  (groups 0-3 → 0, 4-7 → 1). FasterVAR calibrates its ratios per model; these are a transplant, as for VAR.
"""

from moss_models.core.presets import register_peer_settings, register_rank_ratios, register_thresholds
from moss_models.infinity.presets import FASTERVAR_RANK_RATIOS as INFINITY_RANK_RATIOS

#: the family name the testbed's presets are registered (and looked up) under
FAMILY = "testbed"

THRESHOLDS: dict[str, tuple[float, ...]] = {
    "k2": (90.0, 30.0),
    "k3": (90.0, 20.0, 10.0),
    "k4": (90.0, 30.0, 20.0, 10.0),
    "k5": (100.0, 90.0, 30.0, 20.0, 10.0),  # the search: [100, 100, 30, 20, 10], an empty band (see above)
}
#: how each preset was found (benchmarks/results/testbed/search-kK.json abridged; PSNR in dB against moss=off on
#: the search conditions, all-finest = every refine scale at band 100). ``answer``: the search's own answer where
#: the preset differs from it (an empty band), the preset then being the best point of its trace with none
SEARCH: dict[str, dict] = {
    "k2": {'objective': 'psnr', 'budget': 1.0, 'step': 10.0, 'strategy': 'grid', 'psnr': 24.807, 'psnr_all_finest': 25.748, 'evaluations': 11, 'conditions': 20, 'date': '2026-12-04'},
    "k3": {'objective': 'psnr', 'budget': 1.0, 'step': 10.0, 'strategy': 'grid', 'psnr': 22.19, 'psnr_all_finest': 23.172, 'evaluations': 20, 'conditions': 20, 'date': '2026-12-04'},
    "k4": {'objective': 'psnr', 'budget': 1.0, 'step': 10.0, 'strategy': 'grid', 'psnr': 20.374, 'psnr_all_finest': 21.37, 'evaluations': 27, 'conditions': 20, 'date': '2026-12-04'},
    "k5": {'objective': 'psnr', 'budget': 1.0, 'step': 10.0, 'strategy': 'grid', 'answer': (100.0, 100.0, 30.0, 20.0, 10.0), 'psnr': 18.901, 'psnr_all_finest': 20.089, 'evaluations': 26, 'conditions': 20, 'date': '2026-12-04'},
}  # fmt: skip
#: True while the presets are placeholders rather than a search on the trained testbed
UNTUNED = False

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
