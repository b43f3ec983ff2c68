"""GenEval as a moss evaluator: score a run directory's images against the official GenEval metadata.

The data side tags each record of a GenEval run with ``record["benchmark"] = {"name": "geneval", "prompt_index":
<0-based line of the official file>, "sample": <0-based sample number>}``. :class:`GenEvalEvaluator` reads those
records, runs the detector and the colour classifier (:mod:`.models`) on every image, applies the official rules
(:mod:`.rules`) and returns the official summary as an :class:`~moss_eval.quality.base.EvalResult`.

It also writes the official folder layout (``write_official_layout``)::

    <run>/eval/geneval_official/<prompt_index:05d>/metadata.jsonl          the official metadata line
    <run>/eval/geneval_official/<prompt_index:05d>/samples/<sample:04d>.png a hard link to the run's image

so the official evaluator (mmdet + open_clip, its own environment) runs on the same images unchanged::

    python evaluation/evaluate_images.py <run>/eval/geneval_official --outfile results.jsonl --model-path <ckpts>
    python evaluation/summary_scores.py results.jsonl
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from moss_eval.quality.base import EVAL_DIR, EvalInput, EvalResult, WeightFile
from moss_eval.quality.geneval.metadata import (
    METADATA_SOURCE,
    NUM_PROMPTS,
    TASKS,
    GenEvalPrompt,
    load_metadata,
)
from moss_eval.quality.geneval.rules import (
    ColorClassifier,
    Detector,
    Thresholds,
    score_image,
    summarize_scores,
)
from moss_eval.records import atomic_write_bytes, atomic_write_text

__all__ = ["OFFICIAL_LAYOUT_DIR", "GenEvalEvaluator", "GenEvalItem", "write_official_layout"]

OFFICIAL_LAYOUT_DIR = "geneval_official"  # under <run>/eval/
BENCHMARK_NAME = "geneval"
DETECTOR_WHAT = (
    "Mask2Former Swin-S COCO instance segmentation, a transformers folder (config.json, "
    "preprocessor_config.json, model.safetensors or pytorch_model.bin): facebook/mask2former-swin-small-coco-instance"
)
# What the pre-generation check requires in each folder (the hub layout); the weights (model.safetensors or
# pytorch_model.bin, or a sharded index) are "one of", so they are checked when the model is loaded.
DETECTOR_FILES = ("config.json", "preprocessor_config.json")
CLIP_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
CLIP_WHAT = (
    "CLIP ViT-L/14, a transformers folder (config.json, preprocessor_config.json, tokenizer files, "
    "model.safetensors or pytorch_model.bin): openai/clip-vit-large-patch14"
)


@dataclass(frozen=True)
class GenEvalItem:
    """One image of a GenEval run: its record id, prompt, sample number and image file."""

    record_id: str
    prompt: GenEvalPrompt
    sample: int
    image_path: Path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Make ``dst`` a hard link to ``src`` (atomically: link to a temporary name, rename); copy when linking
    fails (another file system, no link support). Returns True when linked."""
    if dst.exists() and os.path.samefile(src, dst):
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(dst, src.read_bytes())
        return False


def write_official_layout(out_dir: str | Path, items: Iterable[GenEvalItem]) -> dict[str, int]:
    """Write the official GenEval folder layout for ``items`` under ``out_dir`` (see the module docstring).

    ``metadata.jsonl`` holds the official line as ``json.dump`` writes it (what the official generator writes and
    its evaluator ``json.load``\\ s). Images are hard-linked, or copied with a warning when linking fails. Prompt
    folders and sample files of an earlier evaluation that are not in ``items`` are removed, so the official
    evaluator sees exactly these images. Returns ``{"linked": n, "copied": n, "removed": n}``.
    """
    import json

    out_dir = Path(out_dir)
    items = list(items)
    wanted: dict[str, set[str]] = {}
    linked = copied = removed = 0
    for item in items:
        folder = f"{item.prompt.index:05d}"
        name = f"{item.sample:04d}.png"
        wanted.setdefault(folder, set()).add(name)
        prompt_dir = out_dir / folder
        meta_path = prompt_dir / "metadata.jsonl"
        meta_text = json.dumps(item.prompt.metadata)
        if not meta_path.is_file() or meta_path.read_text("utf-8") != meta_text:
            atomic_write_text(meta_path, meta_text)
        if _link_or_copy(item.image_path, prompt_dir / "samples" / name):
            linked += 1
        else:
            copied += 1
    if out_dir.is_dir():
        for sub in out_dir.iterdir():
            if not (sub.is_dir() and re.fullmatch(r"\d{5}", sub.name)):
                continue  # not ours (e.g. the official evaluator's results file)
            if sub.name not in wanted:
                removed += (
                    sum(1 for _ in (sub / "samples").glob("*.png")) if (sub / "samples").is_dir() else 0
                )
                shutil.rmtree(sub)
                continue
            for png in (sub / "samples").glob("*.png"):
                if png.name not in wanted[sub.name]:
                    png.unlink()
                    removed += 1
    if copied:
        warnings.warn(
            f"could not hard-link {copied} image(s) into {out_dir} (another file system?); copied them instead",
            stacklevel=2,
        )
    return {"linked": linked, "copied": copied, "removed": removed}


class GenEvalEvaluator:
    """GenEval (Ghosh et al., 2023): object, count, colour and position correctness of generated images.

    Args:
        detector: local transformers folder of Mask2Former Swin-S COCO instance
            (``facebook/mask2former-swin-small-coco-instance``); config key ``eval.geneval.detector``.
        clip: local transformers folder of CLIP ViT-L/14 (``openai/clip-vit-large-patch14``); ``eval.geneval.clip``.
        device: where the models run; None uses :attr:`EvalInput.device`.
        write_official_layout: also write ``<run>/eval/geneval_official/`` (see the module docstring).
        rewrite_file: the prompt-rewrite JSON the run was generated with (Infinity's ``prompt_rewrite_cache.json``),
            or None for the original prompts. Scoring always uses the official metadata; this file names the
            prompt variant in ``info`` and lets ``check_prompts`` verify the records.
        check_prompts: require each record's ``prompt`` to be the prompt it should have been generated from
            (the rewritten one when ``rewrite_file`` is set, else the original), which catches a run made with
            the other prompt variant or with misnumbered prompts.
        detector_scale: the detector's input size, ``(short side, longest long side)``; mmdet's test scale
            ``(800, 1333)`` is the official one (smaller only for tests).

    :meth:`evaluate` returns ``EvalResult(name="geneval")`` with ``scores`` ``{"overall", <each task>}`` (a task
    with no images in the run is None), ``tables`` ``tasks`` and ``prompts``, ``per_image`` (record id →
    ``correct``, ``reason``, ``tag``, ``prompt_index``, ``sample``, ``details``) and ``info`` (thresholds, model
    folders, prompt variant, image/prompt counts, whether all 553 prompts were scored).
    """

    name = "geneval"

    def __init__(
        self,
        detector: str,
        clip: str,
        device: str | None = None,
        write_official_layout: bool = True,
        rewrite_file: str | None = None,
        check_prompts: bool = True,
        detector_scale: Sequence[int] = (800, 1333),
    ):
        self.detector = None if detector is None else str(detector)
        self.clip = None if clip is None else str(clip)
        self.device = device
        self.write_official_layout = write_official_layout
        self.rewrite_file = None if rewrite_file in (None, "") else str(rewrite_file)
        self.check_prompts = check_prompts
        scale = tuple(int(v) for v in detector_scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(
                f"eval.geneval.detector_scale={list(detector_scale)}: expected [short side, long side] with "
                "0 < short <= long; the official value is [800, 1333]"
            )
        self.detector_scale = scale
        self.thresholds = Thresholds()
        self._prompts: list[GenEvalPrompt] | None = None
        self._models: dict[str, tuple[Detector, ColorClassifier]] = {}

    # ------------------------------------------------------------------------------------------ contract

    def weight_files(self) -> list[WeightFile]:
        """The two model folders (weights themselves are checked at load: safetensors or .bin) and the
        rewrite file when one is set."""
        files = [
            WeightFile("eval.geneval.detector", self.detector, DETECTOR_WHAT, "dir", DETECTOR_FILES),
            WeightFile("eval.geneval.clip", self.clip, CLIP_WHAT, "dir", CLIP_FILES),
        ]
        if self.rewrite_file is not None:
            files.append(
                WeightFile(
                    "eval.geneval.rewrite_file",
                    self.rewrite_file,
                    "GenEval prompt rewrites, a JSON object {original prompt: rewritten prompt} "
                    "(Infinity's prompt_rewrite_cache.json)",
                    "file",
                )
            )
        return files

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        """Score every GenEval image of the run (records are checked before any model is loaded)."""
        self.items(inputs)
        detector, classifier = self.load_models(self.device or inputs.device, inputs.batch_size)
        return self.score_run(inputs, detector, classifier)

    # ------------------------------------------------------------------------------------------ parts

    def prompts(self) -> list[GenEvalPrompt]:
        """The 553 official prompts, with this evaluator's rewrite file applied (loaded once)."""
        if self._prompts is None:
            self._prompts = load_metadata(self.rewrite_file)
        return self._prompts

    def load_models(self, device: str, batch_size: int = 4) -> tuple[Detector, ColorClassifier]:
        """Build (once per device) the Mask2Former detector and the CLIP colour classifier from their folders."""
        if device not in self._models:
            from moss_eval.quality.geneval.models import ClipColorClassifier, Mask2FormerDetector

            for key, value in (("eval.geneval.detector", self.detector), ("eval.geneval.clip", self.clip)):
                if value is None:
                    raise ValueError(f"{key} is not set; point it at a local model folder")
            detector = Mask2FormerDetector(
                self.detector,
                device=device,
                batch_size=batch_size,
                min_score=self.thresholds.detection,
                test_scale=self.detector_scale,
            )
            self._models[device] = (detector, ClipColorClassifier(self.clip, device=device))
        return self._models[device]

    def items(self, inputs: EvalInput) -> list[GenEvalItem]:
        """The run's records as :class:`GenEvalItem`\\ s, validated: every record tagged as GenEval, prompt
        indices in range, no (prompt, sample) twice, images present, and (``check_prompts``) the right prompt."""
        prompts = self.prompts()
        run = _run_name(inputs)
        untagged, seen, items, wrong_prompt = [], {}, [], []
        for record in inputs.records:
            rid = record.get("id")
            if rid is None:
                raise ValueError(f"run {run}: a record has no id (prompt {record.get('prompt')!r})")
            tag = record.get("benchmark")
            if not isinstance(tag, Mapping) or tag.get("name") != BENCHMARK_NAME:
                untagged.append(str(rid))
                continue
            index, sample = tag.get("prompt_index"), tag.get("sample")
            if not _is_int(index) or not 0 <= index < NUM_PROMPTS:
                raise ValueError(
                    f"run {run}: record {rid} has benchmark.prompt_index={index!r}; expected an int in "
                    f"0..{NUM_PROMPTS - 1} (the line of the official evaluation_metadata.jsonl)"
                )
            if not _is_int(sample) or sample < 0:
                raise ValueError(
                    f"run {run}: record {rid} has benchmark.sample={sample!r}; expected an int >= 0"
                )
            if (index, sample) in seen:
                raise ValueError(
                    f"run {run}: records {seen[(index, sample)]} and {rid} are both prompt {index} sample {sample}"
                )
            seen[(index, sample)] = rid
            prompt = prompts[index]
            if self.check_prompts and record.get("prompt") != prompt.prompt:
                wrong_prompt.append((str(rid), prompt, record.get("prompt")))
            path = inputs.image_path(record)
            if not path.is_file():
                raise FileNotFoundError(f"run {run}: the image of record {rid} is missing: {path}")
            if path.suffix.lower() != ".png":
                raise ValueError(f"run {run}: record {rid}'s image {path} is not a PNG (GenEval scores PNGs)")
            items.append(GenEvalItem(str(rid), prompt, int(sample), path))
        if untagged:
            raise ValueError(
                f"run {run} ({inputs.run_dir}): {len(untagged)} record(s) are not GenEval images (no "
                "record['benchmark'] = {'name': 'geneval', 'prompt_index': int, 'sample': int}), e.g. "
                f"{', '.join(untagged[:3])}; generate the run with data=geneval"
            )
        if wrong_prompt:
            rid, prompt, got = wrong_prompt[0]
            variant = "rewritten (eval.geneval.rewrite_file)" if self.rewrite_file else "original"
            hint = (
                "the run used the original prompts: unset eval.geneval.rewrite_file"
                if self.rewrite_file and got == prompt.original_prompt
                else "set eval.geneval.rewrite_file to the rewrite file the run used"
                if not self.rewrite_file
                else "the run used another rewrite file"
            )
            raise ValueError(
                f"run {run}: {len(wrong_prompt)} record(s) were not generated from the {variant} GenEval prompt; "
                f"e.g. record {rid} (prompt {prompt.index}) has prompt {got!r}, expected {prompt.prompt!r}. "
                f"Likely {hint} (or pass check_prompts=False)"
            )
        return items

    def score_run(
        self, inputs: EvalInput, detector: Detector, color_classifier: ColorClassifier
    ) -> EvalResult:
        """:meth:`evaluate` with the given models (built elsewhere, or fakes in tests)."""
        items = self.items(inputs)
        layout = None
        if self.write_official_layout:
            layout = Path(inputs.run_dir) / EVAL_DIR / OFFICIAL_LAYOUT_DIR
            write_official_layout(layout, items)
        per_image: dict[str, dict[str, Any]] = {}
        batch = max(1, int(inputs.batch_size))
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            images = [_load_image(item.image_path) for item in chunk]
            detections = detector.detect(images)
            if len(detections) != len(images):
                raise ValueError(f"the detector returned {len(detections)} results for {len(images)} images")
            for item, image, det in zip(chunk, images, detections, strict=True):
                verdict = score_image(image, det, item.prompt.metadata, color_classifier, self.thresholds)
                per_image[item.record_id] = {
                    "correct": verdict.correct,
                    "reason": verdict.reason,
                    "tag": verdict.tag,
                    "prompt_index": item.prompt.index,
                    "sample": item.sample,
                    "details": verdict.details,
                }
        summary = summarize_scores(per_image.values())
        scores: dict[str, float | None] = {"overall": summary["overall"]}
        scores.update({t: summary["tasks"][t]["score"] if t in summary["tasks"] else None for t in TASKS})
        tasks_table = [{"task": t, **v} for t, v in summary["tasks"].items()]
        return EvalResult(
            name=self.name,
            scores=scores,
            tables={"tasks": tasks_table, "prompts": _prompt_rows(items, per_image)},
            per_image=per_image,
            info=self._info(summary, items, layout, detector, color_classifier),
        )

    # ------------------------------------------------------------------------------------------ helpers

    def _info(self, summary, items, layout, detector, color_classifier) -> dict[str, Any]:
        samples: dict[int, int] = {}
        for item in items:
            samples[item.prompt.index] = samples.get(item.prompt.index, 0) + 1
        info: dict[str, Any] = {
            "thresholds": self.thresholds.to_dict(),
            "detector": {
                "folder": self.detector,
                "class": type(detector).__name__,
                "input_scale": list(self.detector_scale),
            },
            "color_classifier": {"folder": self.clip, "class": type(color_classifier).__name__},
            "prompt_variant": "rewritten" if self.rewrite_file else "original",
            "rewrite_file": self.rewrite_file,
            "rewrite_sha256": _sha256(Path(self.rewrite_file).expanduser()) if self.rewrite_file else None,
            "metadata_source": METADATA_SOURCE,
            "images": summary["images"],
            "prompts": summary["prompts"],
            "correct_images": summary["correct_images"],
            "correct_prompts": summary["correct_prompts"],
            "samples_per_prompt": sorted(set(samples.values())),
            "complete": len(samples) == NUM_PROMPTS,
            "aggregation": "task score = mean over the task's images; overall = mean of the task scores",
            "official_layout": str(layout) if layout is not None else None,
            "versions": {pkg: _version(pkg) for pkg in ("transformers", "torch", "pillow")},
        }
        return info


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _run_name(inputs: EvalInput) -> str:
    names = {r.get("run_name") for r in inputs.records if r.get("run_name")}
    return next(iter(names)) if len(names) == 1 else str(inputs.run_dir)


def _load_image(path: Path):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        # Like the official crops (ImageOps.exif_transpose) and mmcv's reader (OpenCV applies EXIF orientation).
        return ImageOps.exif_transpose(im).convert("RGB")


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _prompt_rows(items: Sequence[GenEvalItem], per_image: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    rows: dict[int, dict[str, Any]] = {}
    for item in items:
        p = item.prompt
        row = rows.setdefault(
            p.index,
            {
                "prompt_index": p.index,
                "tag": p.tag,
                "prompt": p.original_prompt,
                "generation_prompt": p.prompt,
                "images": 0,
                "correct": 0,
            },
        )
        row["images"] += 1
        row["correct"] += int(per_image[item.record_id]["correct"])
    for row in rows.values():
        row["score"] = row["correct"] / row["images"]
    return [rows[i] for i in sorted(rows)]
