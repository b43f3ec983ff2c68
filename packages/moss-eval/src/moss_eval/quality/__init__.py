"""The quality half of moss-eval: benchmark and preference evaluators that score a run folder's images.

Every evaluator follows one contract (:mod:`moss_eval.quality.base`): :meth:`~base.Evaluator.weight_files` names the
local files it reads (checked before any image is generated), :meth:`~base.Evaluator.evaluate` scores an
:class:`~base.EvalInput` and returns an :class:`~base.EvalResult` written as ``<run>/eval/<name>.json``.

=====================  ==============================================================  ==========================
name (``conf/eval``)   what it measures                                                 local weights
=====================  ==============================================================  ==========================
``fidelity``           PSNR, SSIM, MS-SSIM, LPIPS against the ``moss=off`` twin          none (LPIPS: AlexNet file)
``geneval``            GenEval's official rules (:mod:`.geneval`)                       Mask2Former, CLIP ViT-L/14
``dpg``                DPG-Bench with the dependency rule (:mod:`.dpg`)                 a transformers VQA model
``hps``                HPSv2.1 (OpenCLIP ViT-H-14)                                      ``HPS_v2.1_compressed.pt``
``imagereward``        ImageReward (BLIP through transformers)                          ``ImageReward.pt``, BERT
``fid``                FID against a folder of reference images                         torch-fidelity Inception
``clip_score``         CLIP score (torchmetrics' formula)                               a CLIP folder
``shapes``             Shapes-GenEval on the procedural shapes prompts (:mod:`.shapes`)   none (classical detector)
=====================  ==============================================================  ==========================

The model libraries (transformers, open_clip, torchvision, torch-fidelity) are the ``moss-eval[quality]`` extra and
are imported only when an evaluator loads its models, so this package imports quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from moss_eval.quality.base import (
    EVAL_DIR,
    EvalInput,
    EvalResult,
    Evaluator,
    MissingWeightsError,
    WeightFile,
    check_weights,
)

_LAZY = {
    "FidelityEvaluator": "moss_eval.quality.fidelity_eval",
    "HPSEvaluator": "moss_eval.quality.preference",
    "ImageRewardEvaluator": "moss_eval.quality.preference",
    "ImageRewardModel": "moss_eval.quality.preference",
    "load_hps_model": "moss_eval.quality.preference",
    "FIDEvaluator": "moss_eval.quality.distribution",
    "CLIPScoreEvaluator": "moss_eval.quality.distribution",
    "load_inception": "moss_eval.quality.distribution",
    "load_clip": "moss_eval.quality.distribution",
    "LPIPS": "moss_eval.quality.lpips",
    "LPIPS_BACKBONES": "moss_eval.quality.lpips",
    "load_lpips": "moss_eval.quality.lpips",
    "write_lpips_weights": "moss_eval.quality.lpips_jax",
    "GenEvalEvaluator": "moss_eval.quality.geneval",
    "DPGEvaluator": "moss_eval.quality.dpg",
    "ShapesGenEvalEvaluator": "moss_eval.quality.shapes",
}

__all__ = [
    "EVAL_DIR",
    "EvalInput",
    "EvalResult",
    "Evaluator",
    "MissingWeightsError",
    "WeightFile",
    "check_weights",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
