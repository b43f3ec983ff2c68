"""MoSs threshold presets for the testbed: PLACEHOLDERS, untuned.

These are the Infinity paper's thresholds (:data:`moss_models.infinity.presets.THRESHOLDS`), registered under the
testbed's own family name so that ``moss=k2`` … ``k5`` resolve for it. Nothing was searched for the testbed: its
schedule (10 scales up to 16², not Infinity's up to 64²) and its weights differ from the paper's, so these values
say nothing about what suits it. Run ``tools/search_thresholds.py`` on the trained testbed and replace them;
``UNTUNED`` is then False.
"""

from moss_models.core.presets import register_thresholds
from moss_models.infinity.presets import THRESHOLDS as INFINITY_PAPER_THRESHOLDS

#: the family name the testbed's presets are registered (and looked up) under
FAMILY = "testbed"
THRESHOLDS: dict[str, tuple[float, ...]] = dict(INFINITY_PAPER_THRESHOLDS)  # placeholders: the paper's values
#: True while the presets are the paper's Infinity values rather than a search on the testbed
UNTUNED = True

register_thresholds(FAMILY, THRESHOLDS)
