"""Shapes: a seeded procedural text-to-image dataset and Shapes-GenEval, its classical-vision benchmark.

* :mod:`.scene` (NumPy): :class:`ShapeObject`, :class:`Scene`, :func:`sample_scene`, :func:`render`,
  :func:`caption`, :func:`vocabulary`, :func:`scene_to_dict` / :func:`scene_from_dict`, and the evaluation
  prompt set :func:`evaluation_prompts` (tasks :data:`TASKS`);
* :mod:`.dataset` (torch): :class:`ShapesDataset`, the training set, and :func:`collate_shapes`;
* :mod:`.detector`: :class:`ShapeDetector` (Lab colour masks, connected components, template IoU; scipy);
* :mod:`.evaluator`: the rules (:func:`score_image`, :func:`summarize`), :func:`validate_on_dataset` and
  :class:`ShapesGenEvalEvaluator` (``conf/eval/shapes.yaml``; no weight files).
"""

from moss_eval.quality.shapes.dataset import ShapesDataset, collate_shapes
from moss_eval.quality.shapes.detector import DetectedShape, DetectorConfig, ShapeDetector
from moss_eval.quality.shapes.evaluator import (
    BENCHMARK_NAME,
    ShapesGenEvalEvaluator,
    score_image,
    summarize,
    validate_on_dataset,
)
from moss_eval.quality.shapes.scene import (
    BACKGROUNDS,
    COLORS,
    LAYOUTS,
    PALETTE,
    RELATIONS,
    SHAPES,
    TASKS,
    Background,
    Group,
    Scene,
    ShapeObject,
    ShapesPrompt,
    caption,
    evaluation_prompts,
    groups,
    render,
    sample_scene,
    scene_from_dict,
    scene_to_dict,
    vocabulary,
)

__all__ = [
    "BACKGROUNDS",
    "BENCHMARK_NAME",
    "COLORS",
    "LAYOUTS",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "TASKS",
    "Background",
    "DetectedShape",
    "DetectorConfig",
    "Group",
    "Scene",
    "ShapeDetector",
    "ShapeObject",
    "ShapesDataset",
    "ShapesGenEvalEvaluator",
    "ShapesPrompt",
    "caption",
    "collate_shapes",
    "evaluation_prompts",
    "groups",
    "render",
    "sample_scene",
    "scene_from_dict",
    "scene_to_dict",
    "score_image",
    "summarize",
    "validate_on_dataset",
    "vocabulary",
]
