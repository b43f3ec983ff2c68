"""moss-dispatch: which tokens each scale refines in Mixture of Scales (MoSs).

Pure torch on ``(B, C, H, W)`` latents and lists of ``(h, w)`` grids; it knows nothing of any model.

* scorers — :func:`variance_score` (the paper's Eq. 3) and training-free variants, by name via
  :func:`get_scorer` / :func:`frequency_score`;
* :class:`ScalePlan` — percentile bands to exact per-scale token counts, and :meth:`ScalePlan.dispatch` to the
  selected positions of every image (:class:`Dispatch`, or explicit masks via :meth:`Dispatch.from_masks`);
  threshold presets belong to the model families (moss-models), not here;
* :func:`composite` — scatter, upsample and add the refine scales' residuals onto the draft;
* :func:`search_thresholds` — the paper's offline top-down threshold search;
* token pruning inside a scale for the peers — :func:`mean_deviation_score` / :func:`keep_top` (FastVAR) and
  :func:`norm_sampling_probs` / :func:`sample_rows` (FasterVAR's representative tokens);
* :func:`trusted_values` — skip the NaN/inf checks (device reads) inside a loop that validates its own result;
* accounting — tokens processed, forward passes and KV-cache tokens/bytes for baseline runs and plans.
"""

from moss_dispatch._checks import trusted_values
from moss_dispatch.accounting import TokenAccount, baseline_account, kv_cache_bytes, scale_tokens
from moss_dispatch.composite import INTERPOLATION_MODES, composite, scatter_to_grid, upsample_to
from moss_dispatch.plan import (
    Dispatch,
    ScalePlan,
    ScaleSelection,
    band_start_rank,
    band_token_count,
)
from moss_dispatch.pruning import keep_top, mean_deviation_score, norm_sampling_probs, num_kept, sample_rows
from moss_dispatch.scorers import (
    SCORERS,
    fft_score,
    frequency_score,
    get_scorer,
    gradient_score,
    laplacian_score,
    random_score,
    register_scorer,
    variance_score,
)
from moss_dispatch.search import SearchStep, ThresholdSearchResult, search_thresholds

__version__ = "0.4.0"

__all__ = [
    "INTERPOLATION_MODES",
    "SCORERS",
    "Dispatch",
    "ScalePlan",
    "ScaleSelection",
    "SearchStep",
    "ThresholdSearchResult",
    "TokenAccount",
    "band_start_rank",
    "band_token_count",
    "baseline_account",
    "composite",
    "fft_score",
    "frequency_score",
    "get_scorer",
    "gradient_score",
    "keep_top",
    "kv_cache_bytes",
    "laplacian_score",
    "mean_deviation_score",
    "norm_sampling_probs",
    "num_kept",
    "random_score",
    "register_scorer",
    "sample_rows",
    "scale_tokens",
    "scatter_to_grid",
    "search_thresholds",
    "trusted_values",
    "upsample_to",
    "variance_score",
]
