"""DPG-Bench (TencentQQGYLab/ELLA's Dense Prompt Graph benchmark) for moss-eval.

* :func:`load_prompts` — the 1,065 official prompts (fixed order) with their question graphs
  (:class:`DPGPrompt`, :class:`DPGQuestion`); the official protocol makes :data:`IMAGES_PER_PROMPT` (4) images each;
* :mod:`~moss_eval.quality.dpg.scoring` — the official yes/no and dependency rules and aggregation, with ELLA
  issue #60 fixed (``official_bug_compatible=True`` reproduces the official numbers);
* :class:`TransformersVQA` — a local transformers VQA model (BLIP VQA, or an image-text-to-text chat model);
* :class:`DPGEvaluator` — the evaluator (``conf/eval/dpg.yaml``); :func:`write_official_layout` — the 2x2 tiles
  the official script reads.

Only the standard library is imported here; torch, transformers and pillow are imported where models are built
and images read.
"""

from moss_eval.quality.dpg.data import (
    IMAGES_PER_PROMPT,
    NUM_PROMPTS,
    DPGPrompt,
    DPGQuestion,
    build_question_graphs,
    convert_official_csv,
    convert_official_prompts,
    load_prompts,
    load_question_rows,
)
from moss_eval.quality.dpg.evaluator import DPGEvaluator, dpg_images, write_official_layout
from moss_eval.quality.dpg.scoring import (
    DPGScores,
    ImageAnswers,
    VQAModel,
    aggregate,
    apply_dependency_rule,
    is_yes,
    score_image,
)
from moss_eval.quality.dpg.vqa import TransformersVQA, normalize_answer

__all__ = [
    "IMAGES_PER_PROMPT",
    "NUM_PROMPTS",
    "DPGEvaluator",
    "DPGPrompt",
    "DPGQuestion",
    "DPGScores",
    "ImageAnswers",
    "TransformersVQA",
    "VQAModel",
    "aggregate",
    "apply_dependency_rule",
    "build_question_graphs",
    "convert_official_csv",
    "convert_official_prompts",
    "dpg_images",
    "is_yes",
    "load_prompts",
    "load_question_rows",
    "normalize_answer",
    "score_image",
    "write_official_layout",
]
