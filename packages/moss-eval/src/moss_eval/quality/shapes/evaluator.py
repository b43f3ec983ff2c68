"""Shapes-GenEval: score generated images against the ground truth of the procedural prompt set.

**Rules** (:func:`score_image`), for every task: each group of the prompt (shape, colour, count) must be detected
exactly ``count`` times (shape *and* colour right), and nothing else may be detected (no other shape/colour
pair, no ``"unknown"`` blob), unless ``allow_extra``. For prompts with a relation (the ``position`` task), the
centre of the first group's detections must be offset from the second's by more than ``position_margin`` (a
fraction of the image side) in the stated direction ("left of": smaller x; "above": smaller y). The background
is not scored.

**Summary** (:func:`summarize`): as GenEval, a task's score is the fraction of its images that are correct and
``overall`` is the unweighted mean of the task scores.

**Validation** (:func:`validate_on_dataset`): the ground-truth renders of the evaluation prompts must score
>= 0.95. Measured: **1.000** on the 250 prompts of seed 0 at 128 px (every task 1.0; also 1.0 at 256 px and on
1,000 prompts), with the default :class:`~.detector.DetectorConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moss_eval.quality.base import EvalInput, EvalResult, WeightFile
from moss_eval.quality.shapes.detector import DetectedShape, DetectorConfig, ShapeDetector
from moss_eval.quality.shapes.scene import TASKS, ShapesPrompt, evaluation_prompts, render, scene_from_dict

__all__ = [
    "BENCHMARK_NAME",
    "ShapesGenEvalEvaluator",
    "score_image",
    "summarize",
    "validate_on_dataset",
]

BENCHMARK_NAME = "shapes"
POSITION_MARGIN = 0.03


def _name(shape: str, color: str) -> str:
    return f"{color} {shape}"


def score_image(
    detections: Sequence[DetectedShape],
    scene_dict: Mapping[str, Any],
    position_margin: float = POSITION_MARGIN,
    allow_extra: bool = False,
) -> tuple[bool, str]:
    """``(correct, reason)`` of one image's detections against the prompt's ground-truth scene (see the module
    docstring); ``reason`` is empty when correct, else says what was expected and what was found."""
    scene = scene_from_dict(scene_dict)
    expected: dict[tuple[str, str], int] = {}
    for obj in scene.objects:
        expected[(obj.shape, obj.color)] = expected.get((obj.shape, obj.color), 0) + 1
    found: dict[tuple[str, str], list[DetectedShape]] = {}
    for det in detections:
        found.setdefault((det.shape, det.color), []).append(det)
    problems = []
    for (shape, color), count in expected.items():
        got = len(found.get((shape, color), []))
        if got != count:
            problems.append(f"expected {count} {_name(shape, color)}, found {got}")
    if not allow_extra:
        extra = {k: len(v) for k, v in found.items() if k not in expected}
        for (shape, color), count in sorted(extra.items()):
            problems.append(f"unexpected {count} {_name(shape, color)}")
    if problems:
        return False, "; ".join(problems)
    if scene.relation is not None:
        keys = list(expected)
        a, rel, b = scene.relation
        ga, gb = found[keys[a]], found[keys[b]]
        ax, ay = np.mean([d.cx for d in ga]), np.mean([d.cy for d in ga])
        bx, by = np.mean([d.cx for d in gb]), np.mean([d.cy for d in gb])
        offset = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[rel]
        if offset <= position_margin:
            return False, (
                f"expected {_name(*keys[a])} {rel} {_name(*keys[b])}: centres ({ax:.2f}, {ay:.2f}) and "
                f"({bx:.2f}, {by:.2f})"
            )
    return True, ""


def summarize(per_image: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"overall", "tasks": {task: {"score", "images", "correct"}}, "images", "correct_images"}`` from
    per-image dicts with ``tag`` and ``correct``; overall is the mean of the task scores (None with no images)."""
    tasks: dict[str, dict[str, Any]] = {}
    n = correct = 0
    for row in per_image:
        t = tasks.setdefault(row["tag"], {"images": 0, "correct": 0})
        t["images"] += 1
        t["correct"] += int(bool(row["correct"]))
        n += 1
        correct += int(bool(row["correct"]))
    for t in tasks.values():
        t["score"] = t["correct"] / t["images"]
    ordered = {k: tasks[k] for k in (*TASKS, *sorted(set(tasks) - set(TASKS))) if k in tasks}
    overall = float(np.mean([t["score"] for t in ordered.values()])) if ordered else None
    return {"overall": overall, "tasks": ordered, "images": n, "correct_images": correct}


def validate_on_dataset(
    n_images: int = 250,
    seed: int = 0,
    size: int = 128,
    detector: ShapeDetector | None = None,
) -> dict[str, Any]:
    """Score the ground-truth renders of the first ``n_images`` evaluation prompts of ``seed``: the detector's
    accuracy on real dataset images. Returns ``{"overall", <task>: score, ..., "failures": [(index, prompt,
    reason)]}``."""
    detector = detector or ShapeDetector()
    rows, failures = [], []
    for p in evaluation_prompts(n_images, seed):
        ok, reason = score_image(detector.detect(render(scene_from_dict(p.scene_dict), size)), p.scene_dict)
        rows.append({"tag": p.tag, "correct": ok})
        if not ok:
            failures.append((p.index, p.prompt, reason))
    summary = summarize(rows)
    return {
        "overall": summary["overall"],
        **{t: v["score"] for t, v in summary["tasks"].items()},
        "images": summary["images"],
        "failures": failures,
    }


@dataclass(frozen=True)
class _Item:
    record_id: str
    prompt: ShapesPrompt
    sample: int
    image_path: Path


class ShapesGenEvalEvaluator:
    """Shapes-GenEval over a run generated with ``data=shapes`` (records tagged ``record["benchmark"] = {"name":
    "shapes", "prompt_index": i, "sample": k, "n": <prompt-set size>, "seed": <prompt-set seed>}``).

    Args:
        n, seed: the prompt set (:func:`~.scene.evaluation_prompts`); None takes them from the records (all
            records must agree). When set, records with other values are an error.
        check_prompts: each record's ``prompt`` must be its prompt's caption (catches misnumbered records).
        position_margin: see :func:`score_image`. allow_extra: do not fail images for extra objects.
        max_hue_diff, min_relative_chroma, min_chroma, min_area, min_iou: the detector's thresholds
            (:class:`DetectorConfig`).

    No weight files. :meth:`evaluate` returns ``EvalResult(name="shapes")``: ``scores`` ``{"overall", <task>...}``
    (a task without images is None), tables ``tasks`` and ``prompts``, ``per_image`` (record id → ``correct``,
    ``reason``, ``tag``, ``prompt_index``, ``sample``, ``detections``) and ``info``.
    """

    name = "shapes"

    def __init__(
        self,
        n: int | None = None,
        seed: int | None = None,
        check_prompts: bool = True,
        position_margin: float = POSITION_MARGIN,
        allow_extra: bool = False,
        max_hue_diff: float = DetectorConfig.max_hue_diff,
        min_relative_chroma: float = DetectorConfig.min_relative_chroma,
        min_chroma: float = DetectorConfig.min_chroma,
        min_area: float = DetectorConfig.min_area,
        min_iou: float = DetectorConfig.min_iou,
    ):
        for key, value in (("n", n), ("seed", seed)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(
                    f"eval.shapes.{key}={value!r}: expected an int >= 0 or null (from the records)"
                )
        if n == 0:
            raise ValueError("eval.shapes.n=0: the prompt set needs at least one prompt")
        self.n, self.seed = n, seed
        self.check_prompts = check_prompts
        self.position_margin = float(position_margin)
        self.allow_extra = bool(allow_extra)
        self.detector = ShapeDetector(
            DetectorConfig(max_hue_diff, min_relative_chroma, min_chroma, min_area, min_iou)
        )
        self._prompts: dict[tuple[int, int], list[ShapesPrompt]] = {}

    def weight_files(self) -> list[WeightFile]:
        return []  # classical image analysis: nothing to download

    def prompts(self, n: int, seed: int) -> list[ShapesPrompt]:
        if (n, seed) not in self._prompts:
            self._prompts[(n, seed)] = evaluation_prompts(n, seed)
        return self._prompts[(n, seed)]

    def items(self, inputs: EvalInput) -> tuple[list[_Item], int, int]:
        """The run's records, validated, with the prompt set's ``(n, seed)``."""
        run = str(inputs.run_dir)
        sets, tagged = set(), []
        for record in inputs.records:
            rid = record.get("id")
            tag = record.get("benchmark")
            if not isinstance(tag, Mapping) or tag.get("name") != BENCHMARK_NAME:
                raise ValueError(
                    f"run {run}: record {rid} is not a Shapes-GenEval image (record['benchmark'] = {tag!r}, "
                    "expected {'name': 'shapes', 'prompt_index': int, 'sample': int, 'n': int, 'seed': int}); "
                    "generate the run with data=shapes"
                )
            n = tag.get("n", self.n)
            seed = tag.get("seed", self.seed)
            for key, mine, theirs in (("n", self.n, n), ("seed", self.seed, seed)):
                if mine is not None and theirs != mine:
                    raise ValueError(
                        f"run {run}: record {rid} was generated from the prompt set {key}={theirs!r}, but "
                        f"eval.shapes.{key}={mine!r}; set eval.shapes.{key}=null to use the records' value"
                    )
            if not _is_int(n) or not _is_int(seed):
                raise ValueError(
                    f"run {run}: record {rid} does not say which prompt set it is from (benchmark.n={n!r}, "
                    f"benchmark.seed={seed!r}); set eval.shapes.n and eval.shapes.seed"
                )
            sets.add((n, seed))
            tagged.append((record, tag))
        if len(sets) > 1:
            raise ValueError(f"run {run}: records come from several prompt sets (n, seed): {sorted(sets)}")
        if not sets:
            return [], self.n or 0, self.seed or 0
        n, seed = sets.pop()
        prompts = self.prompts(n, seed)
        items, seen = [], {}
        for record, tag in tagged:
            rid, index, sample = record.get("id"), tag.get("prompt_index"), tag.get("sample")
            if not _is_int(index) or not 0 <= index < n:
                raise ValueError(
                    f"run {run}: record {rid} has benchmark.prompt_index={index!r}; expected 0..{n - 1}"
                )
            if not _is_int(sample) or sample < 0:
                raise ValueError(
                    f"run {run}: record {rid} has benchmark.sample={sample!r}; expected an int >= 0"
                )
            if (index, sample) in seen:
                raise ValueError(f"run {run}: records {seen[(index, sample)]} and {rid} are both prompt {index} "
                                 f"sample {sample}")  # fmt: skip
            seen[(index, sample)] = rid
            prompt = prompts[index]
            if self.check_prompts and record.get("prompt") != prompt.prompt:
                raise ValueError(
                    f"run {run}: record {rid} (prompt {index}) has prompt {record.get('prompt')!r}, expected "
                    f"{prompt.prompt!r} (eval.shapes.check_prompts=false skips this check)"
                )
            path = inputs.image_path(record)
            if not path.is_file():
                raise FileNotFoundError(f"run {run}: the image of record {rid} is missing: {path}")
            items.append(_Item(str(rid), prompt, int(sample), path))
        return items, n, seed

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        items, n, seed = self.items(inputs)
        per_image: dict[str, dict[str, Any]] = {}
        for item in items:
            detections = self.detector.detect(_load_rgb(item.image_path))
            ok, reason = score_image(
                detections, item.prompt.scene_dict, self.position_margin, self.allow_extra
            )
            per_image[item.record_id] = {
                "correct": ok,
                "reason": reason,
                "tag": item.prompt.tag,
                "prompt_index": item.prompt.index,
                "sample": item.sample,
                "detections": [d.to_dict() for d in detections],
            }
        summary = summarize(per_image.values())
        scores: dict[str, float | None] = {"overall": summary["overall"]}
        scores.update({t: summary["tasks"][t]["score"] if t in summary["tasks"] else None for t in TASKS})
        prompt_rows: dict[int, dict[str, Any]] = {}
        for item in items:
            row = prompt_rows.setdefault(
                item.prompt.index,
                {"prompt_index": item.prompt.index, "tag": item.prompt.tag, "prompt": item.prompt.prompt,
                 "images": 0, "correct": 0},
            )  # fmt: skip
            row["images"] += 1
            row["correct"] += int(per_image[item.record_id]["correct"])
        for row in prompt_rows.values():
            row["score"] = row["correct"] / row["images"]
        return EvalResult(
            name=self.name,
            scores=scores,
            tables={
                "tasks": [{"task": t, **v} for t, v in summary["tasks"].items()],
                "prompts": [prompt_rows[i] for i in sorted(prompt_rows)],
            },
            per_image=per_image,
            info={
                "prompt_set": {"n": n, "seed": seed},
                "prompts": len(prompt_rows),
                "complete": len(prompt_rows) == n,
                "images": summary["images"],
                "correct_images": summary["correct_images"],
                "detector": self.detector.config.to_dict(),
                "position_margin": self.position_margin,
                "allow_extra": self.allow_extra,
                "aggregation": "task score = mean over the task's images; overall = mean of the task scores",
            },
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
