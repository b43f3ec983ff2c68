"""GenEval (Ghosh et al., NeurIPS 2023 D&B; djghosh13/geneval, MIT) inside moss-eval.

* :func:`load_metadata` / :class:`GenEvalPrompt`: the 553 official prompts (package data), optionally with
  Infinity's rewritten generation prompts;
* :mod:`.rules`: the official scoring rules and summary, model-free (:func:`score_image`,
  :func:`summarize_scores`), with the :class:`Detector` and :class:`ColorClassifier` protocols;
* :mod:`.models`: Mask2Former and CLIP through transformers (no mmcv/mmdet, no open_clip), imported on use;
* :class:`GenEvalEvaluator`: the evaluator (``conf/eval/geneval.yaml``), which also writes the official folder
  layout so the official evaluator can score the same images.

Importing this package imports NumPy but no model library.
"""

from moss_eval.quality.geneval.evaluator import (
    OFFICIAL_LAYOUT_DIR,
    GenEvalEvaluator,
    GenEvalItem,
    write_official_layout,
)
from moss_eval.quality.geneval.metadata import (
    COCO_CLASSES,
    COLORS,
    METADATA_SOURCE,
    NUM_PROMPTS,
    POSITIONS,
    TASKS,
    GenEvalPrompt,
    load_metadata,
    load_rewrites,
)
from moss_eval.quality.geneval.models import ClipColorClassifier, Mask2FormerDetector, class_index_map
from moss_eval.quality.geneval.rules import (
    COLOR_TEMPLATES,
    ColorClassifier,
    DetectedObject,
    Detections,
    Detector,
    ImageScore,
    Thresholds,
    color_crops,
    compute_iou,
    evaluate_metadata,
    relative_position,
    score_image,
    select_objects,
    summarize_scores,
)

__all__ = [
    "COCO_CLASSES",
    "COLORS",
    "COLOR_TEMPLATES",
    "METADATA_SOURCE",
    "NUM_PROMPTS",
    "OFFICIAL_LAYOUT_DIR",
    "POSITIONS",
    "TASKS",
    "ClipColorClassifier",
    "ColorClassifier",
    "DetectedObject",
    "Detections",
    "Detector",
    "GenEvalEvaluator",
    "GenEvalItem",
    "GenEvalPrompt",
    "ImageScore",
    "Mask2FormerDetector",
    "Thresholds",
    "class_index_map",
    "color_crops",
    "compute_iou",
    "evaluate_metadata",
    "load_metadata",
    "load_rewrites",
    "relative_position",
    "score_image",
    "select_objects",
    "summarize_scores",
    "write_official_layout",
]
