"""moss-eval: what Mixture of Scales (MoSs) costs and how close its images stay to the baseline.

Efficiency

* :class:`StageTimer` — per-stage seconds (CUDA event pairs on CUDA, ``perf_counter`` elsewhere); duck-type
  compatible with ``moss_models``' ``StageClock``, so it can be passed as ``generate(..., clock=timer)``;
* :func:`measure` — repeated calls with warm-up calls excluded → :class:`Measurement` (median, spread);
* :func:`peak_memory` / :func:`max_memory_allocated` / :func:`reset_peak_memory` — CUDA peak bytes (None on CPU);
* :func:`count_flops` — FLOPs of a call via ``FlopCounterMode`` (SDPA included) → :class:`FlopCount`;
* :func:`kv_cache_bytes` — bytes held by a (nested) collection of cache tensors.

Fidelity (uint8 ``HWC`` or float ``CHW`` / ``BCHW`` in ``[0, 1]``, chosen by dtype): :func:`psnr`, :func:`ssim`,
:func:`ms_ssim` (needs >= 176 px) and :func:`fidelity` (all three; ``ms_ssim`` None when too small).

Run records (``moss_eval.records``, standard library only)

* :class:`ImageRecord` — one image's record, the JSON object of ``records/<id>.json`` (``to_dict`` / ``to_json`` /
  ``from_dict``; keys beyond the format's fields kept flat in ``extra``);
* :class:`RunDirectory` — a run's folder (``images/``, ``records/``, ``records.jsonl``, ``summary.json``,
  ``config.yaml``): ``completed_ids``, ``write_image`` (needs pillow), ``write_record``, ``read_records``,
  ``finalize``;
* :func:`atomic_write_bytes` / :func:`atomic_write_text` — temporary file, fsync, rename; mode ``0644 & ~umask``.

Sweep summaries (``moss_eval.sweep``, ``moss_eval.figures``, ``moss_eval.wandb_report``) need pillow, matplotlib
and wandb / wandb-workspaces, which this package does not depend on; they are imported only from those modules.
"""

from moss_eval.fidelity import MS_SSIM_MIN_SIZE, fidelity, ms_ssim, psnr, ssim, to_float_bchw
from moss_eval.flops import FlopCount, count_flops
from moss_eval.memory import PeakMemory, kv_cache_bytes, max_memory_allocated, peak_memory, reset_peak_memory
from moss_eval.records import ImageRecord, RunDirectory, atomic_write_bytes, atomic_write_text
from moss_eval.timing import Measurement, StageTimer, measure

__version__ = "0.7.0"

__all__ = [
    "MS_SSIM_MIN_SIZE",
    "FlopCount",
    "ImageRecord",
    "Measurement",
    "PeakMemory",
    "RunDirectory",
    "StageTimer",
    "atomic_write_bytes",
    "atomic_write_text",
    "count_flops",
    "fidelity",
    "kv_cache_bytes",
    "max_memory_allocated",
    "measure",
    "ms_ssim",
    "peak_memory",
    "psnr",
    "reset_peak_memory",
    "ssim",
    "to_float_bchw",
]
