"""GenEval's scoring rules, separate from any model: the logic of the official ``evaluation/evaluate_images.py``
and ``evaluation/summary_scores.py`` (djghosh13/geneval, commit af4902f), reimplemented.

One image is scored in three steps (:func:`score_image`):

1. **Keep detections** (:func:`select_objects`). The detector gives, per COCO class, boxes
   ``[x0, y0, x1, y1, score]`` and masks (:class:`Detections`, mmdet's result layout). Per class: sort by score
   (highest first), keep scores strictly above 0.3 (0.9 on ``counting`` prompts), keep at most 16, then greedy
   NMS at ``max_overlap`` IoU (1.0 by default, which keeps everything: the official default turns NMS off).
2. **Check the metadata** (:func:`evaluate_metadata`). ``include`` clauses are ANDed: the class must have at
   least ``count`` kept objects; with ``color``, the ``count`` most confident ones are cropped (the object's mask
   pasted on a ``#999`` background, cropped to its box) and classified among :data:`COLORS` by a
   :class:`ColorClassifier`, and at least ``count`` must come out the asked colour; with ``position``
   (``[relation, group]``), every one of those objects must stand in that relation to every object matched by
   include clause ``group`` (:func:`relative_position`). ``exclude`` clauses are ORed: ``count`` or more kept
   objects of the class make the image wrong. The colour and position checks only ever see the most confident
   ``count`` objects, and the position check runs only when the clause's count and colour passed.
3. **Aggregate** (:func:`summarize_scores`): a task's score is the fraction of its *images* that are correct
   (``df.groupby('tag')['correct'].mean()``); ``overall`` is the unweighted mean of the task scores. The official
   summary also prints the fraction of correct images and of prompts with at least one correct image.

The failure reasons are the official ones, word for word, except that relation sets are written sorted (the
official code joins a Python ``set``, whose order varies between runs).

Nothing here imports a model library: the detector and the colour classifier come in through the
:class:`Detector` and :class:`ColorClassifier` protocols (:mod:`.models` has the real ones), so the rules are
tested with fakes whose outputs are known. NumPy and pillow are the only imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from moss_eval.quality.geneval.metadata import COCO_CLASSES, COLORS, TASKS

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "COLOR_TEMPLATES",
    "ColorClassifier",
    "DetectedObject",
    "Detections",
    "Detector",
    "ImageScore",
    "Thresholds",
    "color_crops",
    "compute_iou",
    "evaluate_metadata",
    "relative_position",
    "score_image",
    "select_objects",
    "summarize_scores",
]

# The official zero-shot templates for the colour classifier ({c}: a colour, then the object's class name).
COLOR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")


@dataclass(frozen=True)
class Thresholds:
    """The official evaluator's options (``--options key=value``), with their official defaults.

    ``detection`` (``threshold``) and ``counting`` (``counting_threshold``, used on ``counting`` prompts) are
    strict lower bounds on a detection's score; ``max_objects`` caps the kept detections per class;
    ``max_overlap`` is the NMS IoU (1.0: off); ``position`` (``position_threshold``) is the fraction of the two
    objects' summed sizes subtracted from their centre offset; ``crop_background`` (``bgcolor``) is the colour
    a masked object is pasted on, or ``"original"`` to keep the image around it; ``crop`` crops to the box.
    """

    detection: float = 0.3
    counting: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position: float = 0.1
    crop_background: str = "#999"
    crop: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Detections:
    """One image's detector output in mmdet's instance-segmentation layout.

    ``boxes[c]`` is an ``(n_c, 5)`` float array ``[x0, y0, x1, y1, score]`` (pixels of the image as given) for
    class ``c`` of :data:`~.metadata.COCO_CLASSES`; ``masks[c]`` is the matching ``(n_c, H, W)`` boolean array,
    or ``masks`` is None when the detector has no masks (colour crops then use the box only, as officially).
    """

    boxes: Sequence[np.ndarray]
    masks: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(COCO_CLASSES)
        if len(self.boxes) != n:
            raise ValueError(
                f"Detections.boxes must have one array per COCO class ({n}), got {len(self.boxes)}"
            )
        for c, b in enumerate(self.boxes):
            if np.ndim(b) != 2 or np.shape(b)[1] != 5:
                raise ValueError(
                    f"Detections.boxes[{c}] ({COCO_CLASSES[c]}) must be (n, 5) [x0, y0, x1, y1, score], "
                    f"got shape {np.shape(b)}"
                )
        if self.masks is not None:
            if len(self.masks) != n:
                raise ValueError(
                    f"Detections.masks must have one array per COCO class ({n}), got {len(self.masks)}"
                )
            for c, (b, m) in enumerate(zip(self.boxes, self.masks, strict=True)):
                if len(m) != len(b):
                    raise ValueError(
                        f"Detections.masks[{c}] ({COCO_CLASSES[c]}) has {len(m)} masks for {len(b)} boxes"
                    )


# A kept detection: its box row [x0, y0, x1, y1, score] and its (H, W) boolean mask or None.
DetectedObject = tuple[np.ndarray, "np.ndarray | None"]


@runtime_checkable
class Detector(Protocol):
    """An instance-segmentation model over the 80 COCO classes in :data:`~.metadata.COCO_CLASSES` order."""

    def detect(self, images: Sequence[Image]) -> list[Detections]:
        """One :class:`Detections` per RGB image, boxes and masks in that image's pixels."""
        ...


@runtime_checkable
class ColorClassifier(Protocol):
    """Zero-shot colour naming of object crops (officially CLIP ViT-L/14 with :data:`COLOR_TEMPLATES`)."""

    def classify(self, crops: Sequence[Image], classname: str, colors: Sequence[str]) -> list[str]:
        """For each crop (an RGB image of one ``classname`` object), the colour of ``colors`` it shows."""
        ...


# ------------------------------------------------------------------------------------------ detection rules


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1, ...]`` boxes with the official inclusive-pixel (+1) area convention."""

    def area(x0: float, y0: float, x1: float, y1: float) -> float:
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)

    inter = area(
        max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    )
    union = area(*box_a[:4]) + area(*box_b[:4]) - inter
    return inter / union if union else 0.0


def select_objects(
    detections: Detections, tag: str, thresholds: Thresholds = Thresholds()
) -> dict[str, list[DetectedObject]]:
    """The detections the rules look at: class name → kept objects, most confident first (classes with none
    are absent). See the module docstring, step 1."""
    threshold = thresholds.counting if tag == "counting" else thresholds.detection
    kept: dict[str, list[DetectedObject]] = {}
    for c, classname in enumerate(COCO_CLASSES):
        boxes = np.asarray(detections.boxes[c])
        # The official ordering, np.argsort(scores)[::-1], so that ties break the same way.
        order = np.argsort(boxes[:, 4])[::-1]
        order = order[boxes[order, 4] > threshold][: thresholds.max_objects].tolist()
        objects: list[DetectedObject] = []
        while order:
            best = order.pop(0)
            mask = None if detections.masks is None else np.asarray(detections.masks[c][best])
            objects.append((boxes[best], mask))
            if thresholds.max_overlap != 1:
                order = [i for i in order if compute_iou(boxes[best], boxes[i]) < thresholds.max_overlap]
        if objects:
            kept[classname] = objects
    return kept


def relative_position(box_a: Sequence[float], box_b: Sequence[float], threshold: float = 0.1) -> set[str]:
    """Where A is relative to B: a subset of ``{"left of", "right of", "above", "below"}`` (image y grows down).

    The centre offset is shrunk towards zero by ``threshold × (size_a + size_b)`` per axis; a direction holds
    when its component of the shrunk offset, divided by the length of the unshrunk offset, exceeds 0.5. Objects
    whose shrunk offset is (nearly) zero stand in no relation.
    """
    a = np.asarray(box_a[:4], dtype=np.float64).reshape(2, 2)  # [[x0, y0], [x1, y1]]
    b = np.asarray(box_b[:4], dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    size_a, size_b = np.abs(a[1] - a[0]), np.abs(b[1] - b[0])
    shrunk = np.maximum(np.abs(offset) - threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def color_crops(
    image: Image, objects: Sequence[DetectedObject], thresholds: Thresholds = Thresholds()
) -> list:
    """The images the colour classifier sees: each object's mask pasted on the background, cropped to its box."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    if thresholds.crop_background == "original":
        blank = image.copy()
    else:
        blank = PILImage.new("RGB", image.size, color=thresholds.crop_background)
    crops = []
    for box, mask in objects:
        crop = image
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (image.height, image.width):
                raise ValueError(
                    f"a detection mask has shape {mask.shape}, the image is {(image.height, image.width)} (H, W)"
                )
            crop = PILImage.composite(image, blank, PILImage.fromarray(mask))
        if thresholds.crop:
            crop = crop.crop(tuple(float(v) for v in box[:4]))
        crops.append(crop)
    return crops


def evaluate_metadata(
    image: Image | None,
    objects: Mapping[str, Sequence[DetectedObject]],
    metadata: Mapping[str, Any],
    color_classifier: ColorClassifier | None,
    thresholds: Thresholds = Thresholds(),
) -> tuple[bool, str]:
    """``(correct, reason)`` of one image against one prompt's metadata; see the module docstring, step 2.

    ``reason`` lists every failed clause, one per line (empty when correct). ``image`` and
    ``color_classifier`` are only used by colour clauses.
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[Sequence[DetectedObject] | None] = []
    for req in metadata.get("include", []):
        classname, count = req["class"], req["count"]
        matched = True
        found = list(objects.get(classname, []))[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                if image is None or color_classifier is None:
                    raise ValueError(
                        f"the prompt {metadata.get('prompt')!r} has a colour clause: pass an image and a "
                        "color_classifier"
                    )
                colors = list(
                    color_classifier.classify(color_crops(image, found, thresholds), classname, COLORS)
                )
                if len(colors) != len(found) or any(c not in COLORS for c in colors):
                    raise ValueError(
                        f"the colour classifier returned {colors!r} for {len(found)} crops; "
                        f"expected one of {COLORS} per crop"
                    )
                n_wanted = colors.count(req["color"])
                if n_wanted < count:
                    correct = matched = False
                    reasons.append(
                        f"expected {req['color']} {classname}>={count}, found {n_wanted} {req['color']}; and "
                        + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    )
            if "position" in req and matched:
                relation, group = req["position"]
                targets = matched_groups[group]
                if targets is None:
                    correct = matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    for obj in found:
                        for target in targets:
                            found_relations = relative_position(obj[0], target[0], thresholds.position)
                            if relation not in found_relations:
                                correct = matched = False
                                reasons.append(
                                    f"expected {classname} {relation} target, found "
                                    f"{' and '.join(sorted(found_relations))} target"
                                )
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        classname = req["class"]
        n_found = len(objects.get(classname, []))
        if n_found >= req["count"]:
            correct = False
            reasons.append(f"expected {classname}<{req['count']}, found {n_found}")
    return correct, "\n".join(reasons)


@dataclass
class ImageScore:
    """One image's verdict: ``correct``, the official ``reason`` text, the prompt's ``tag`` and ``details``
    (class name → kept boxes ``[x0, y0, x1, y1, score]``, the official result's ``details``)."""

    correct: bool
    reason: str
    tag: str
    details: dict[str, list[list[float]]] = field(default_factory=dict)


def score_image(
    image: Image,
    detections: Detections,
    metadata: Mapping[str, Any],
    color_classifier: ColorClassifier | None,
    thresholds: Thresholds = Thresholds(),
) -> ImageScore:
    """Score one image: keep detections (:func:`select_objects`), then check the metadata
    (:func:`evaluate_metadata`). ``color_classifier`` may be None for prompts without colour clauses."""
    objects = select_objects(detections, metadata["tag"], thresholds)
    correct, reason = evaluate_metadata(image, objects, metadata, color_classifier, thresholds)
    details = {name: [[float(v) for v in box] for box, _ in objs] for name, objs in objects.items()}
    return ImageScore(correct=correct, reason=reason, tag=metadata["tag"], details=details)


# ------------------------------------------------------------------------------------------- aggregation


def summarize_scores(
    results: Iterable[Mapping[str, Any]], prompt_key: str = "prompt_index"
) -> dict[str, Any]:
    """The official summary (``summary_scores.py``) of per-image results.

    ``results``: one mapping per image with ``tag``, ``correct`` and ``prompt_key`` (what identifies its
    prompt; the official script groups by the metadata string, which is one per prompt). Returns::

        {"overall": mean of the task scores (None without images),
         "tasks": {tag: {"score": correct / images, "correct": int, "images": int}},  # in TASKS order
         "images", "prompts", "correct_images" (fraction), "correct_prompts" (fraction with >= 1 correct)}

    A task's score is the mean over its **images** (not over prompts), and ``overall`` the unweighted mean over
    the tasks present, as officially; a subset of prompts gives a subset of tasks.
    """
    per_task: dict[str, list[bool]] = {}
    per_prompt: dict[Any, bool] = {}
    for r in results:
        correct = r["correct"]
        if not isinstance(correct, bool | np.bool_):
            raise ValueError(f"'correct' must be a bool, got {correct!r}")
        per_task.setdefault(r["tag"], []).append(bool(correct))
        per_prompt[r[prompt_key]] = per_prompt.get(r[prompt_key], False) or bool(correct)
    order = [t for t in TASKS if t in per_task] + [t for t in per_task if t not in TASKS]
    tasks = {
        t: {
            "score": sum(per_task[t]) / len(per_task[t]),
            "correct": sum(per_task[t]),
            "images": len(per_task[t]),
        }
        for t in order
    }
    n_images = sum(v["images"] for v in tasks.values())
    n_correct = sum(v["correct"] for v in tasks.values())
    return {
        "overall": float(np.mean([v["score"] for v in tasks.values()])) if tasks else None,
        "tasks": tasks,
        "images": n_images,
        "prompts": len(per_prompt),
        "correct_images": n_correct / n_images if n_images else None,
        "correct_prompts": sum(per_prompt.values()) / len(per_prompt) if per_prompt else None,
    }
