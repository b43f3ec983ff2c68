"""The DPG-Bench evaluator: ask each image its prompt's questions, apply the official rules, aggregate.

Official DPG-Bench tiles the 4 images of a prompt into one 2x2 image named like the prompt file and crops the
tiles back while scoring; moss generates and stores the images separately (records tagged
``benchmark={"name": "dpg", "item_id": ..., "sample": n}``), so each image is scored directly, which is the same
computation. :func:`write_official_layout` also writes the tiles (sample ``n`` at tile ``n``: top-left, top-right,
bottom-left, bottom-right, the official crop order) to ``<run>/eval/dpg_official/<item_id>.png`` so that the
official script runs on them unchanged::

    PIC_NUM=4 bash dpg_bench/dist_eval.sh <run>/eval/dpg_official <image side in pixels>
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moss_eval.quality.base import EVAL_DIR, EvalInput, EvalResult, WeightFile
from moss_eval.quality.dpg.data import (
    IMAGES_PER_PROMPT,
    NUM_PROMPTS,
    QUESTIONS_FILE,
    DPGQuestion,
    load_prompts,
    missing_parents,
    packaged_questions_file,
)
from moss_eval.quality.dpg.scoring import ImageAnswers, VQAModel, aggregate, score_image
from moss_eval.records import atomic_write_bytes, png_bytes

__all__ = ["OFFICIAL_LAYOUT_DIR", "DPGEvaluator", "DPGImage", "dpg_images", "write_official_layout"]

log = logging.getLogger(__name__)

OFFICIAL_LAYOUT_DIR = "dpg_official"  # <run>/eval/dpg_official/<item_id>.png


class DPGImage:
    """One DPG image of a run: its record, and the benchmark tag's ``item_id`` and ``sample``."""

    __slots__ = ("item_id", "record", "record_id", "sample")

    def __init__(self, record: dict[str, Any], item_id: str, sample: int):
        self.record = record
        self.record_id = str(record.get("id"))
        self.item_id = item_id
        self.sample = sample


def dpg_images(inputs: EvalInput) -> list[DPGImage]:
    """The run's records as :class:`DPGImage`, in record order; ValueError naming the run for a record that is not
    a DPG-Bench image or a repeated ``(item_id, sample)``."""
    images, seen = [], {}
    for record in inputs.records:
        tag = record.get("benchmark")
        item_id = tag.get("item_id") if isinstance(tag, dict) else None
        sample = tag.get("sample") if isinstance(tag, dict) else None
        if (
            not isinstance(tag, dict)
            or tag.get("name") != "dpg"
            or not isinstance(item_id, str)
            or not isinstance(sample, int)
            or isinstance(sample, bool)
            or sample < 0
        ):
            raise ValueError(
                f"run {record.get('run_name')!r} ({inputs.run_dir}): record {record.get('id')!r} has "
                f"benchmark={tag!r}; eval=[dpg] scores DPG-Bench runs only (data=dpg), whose records carry "
                "benchmark={'name': 'dpg', 'item_id': <prompt file stem>, 'sample': <n >= 0>}"
            )
        key = (item_id, sample)
        if key in seen:
            raise ValueError(
                f"run {record.get('run_name')!r} ({inputs.run_dir}): records {seen[key]!r} and "
                f"{record.get('id')!r} are both DPG item {item_id!r} sample {sample}"
            )
        seen[key] = record.get("id")
        images.append(DPGImage(record, item_id, sample))
    return images


def write_official_layout(inputs: EvalInput, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the official 2x2 tiles of a DPG run and return what was written (for the result's ``info``).

    ``out_dir`` defaults to ``<run>/eval/dpg_official``. Every image must be square and of one size (the
    official crops use one ``--resolution`` for both axes): ValueError otherwise. Samples 0-3 go to the 4 tiles
    (a missing one stays black); ``pic_num`` is the number of leading samples every prompt has (the official
    ``PIC_NUM``, 4 for a complete run); samples >= 4 have no tile and are left out with a warning. PNGs in
    ``out_dir`` that belong to no prompt of this run are removed (the official script scores every file there).
    """
    import numpy as np

    images = dpg_images(inputs)
    if not images:
        raise ValueError(f"run {inputs.run_dir}: no DPG images to tile")
    out = Path(out_dir) if out_dir is not None else Path(inputs.run_dir) / EVAL_DIR / OFFICIAL_LAYOUT_DIR
    by_item: dict[str, dict[int, DPGImage]] = defaultdict(dict)
    for im in images:
        by_item[im.item_id][im.sample] = im
    beyond = sorted(im.record_id for im in images if im.sample >= IMAGES_PER_PROMPT)
    if beyond:
        warnings.warn(
            f"DPG official layout: {len(beyond)} images have sample >= {IMAGES_PER_PROMPT} and no tile "
            f"(first: {beyond[0]}); the official protocol tiles {IMAGES_PER_PROMPT} images per prompt",
            stacklevel=2,
        )
    pic_num = IMAGES_PER_PROMPT
    for samples in by_item.values():
        leading = 0
        while leading < IMAGES_PER_PROMPT and leading in samples:
            leading += 1
        pic_num = min(pic_num, leading)
    side = None
    out.mkdir(parents=True, exist_ok=True)
    for item_id, samples in by_item.items():
        tile = None
        for n, im in samples.items():
            if n >= IMAGES_PER_PROMPT:
                continue
            pixels = np.asarray(inputs.load_image(im.record), dtype=np.uint8)
            h, w = pixels.shape[:2]
            if h != w or (side is not None and h != side):
                raise ValueError(
                    f"run {inputs.run_dir}: image {im.record_id} is {w}x{h}; the official DPG layout needs square "
                    f"images of one size (the script crops --resolution x --resolution tiles)"
                    + (f", the others are {side}x{side}" if side is not None else "")
                )
            side = h
            if tile is None:
                tile = np.zeros((2 * side, 2 * side, 3), dtype=np.uint8)
            row, col = divmod(n, 2)
            tile[row * side : (row + 1) * side, col * side : (col + 1) * side] = pixels
        if tile is not None:
            atomic_write_bytes(out / f"{item_id}.png", png_bytes(tile))
    stale = [p for p in out.glob("*.png") if p.stem not in by_item]
    for p in stale:
        p.unlink()
    return {
        "dir": str(out),
        "prompts": len(by_item),
        "pic_num": pic_num,
        "resolution": side,
        "removed_stale": sorted(p.name for p in stale),
        "command": f"PIC_NUM={pic_num} bash dpg_bench/dist_eval.sh {out} {side}",
    }


class DPGEvaluator:
    """DPG-Bench (ELLA's dense prompt graph benchmark) for a run made with ``data=dpg``.

    * ``vqa``: the VQA model: a local transformers folder (loaded by
      :class:`~moss_eval.quality.dpg.vqa.TransformersVQA`, see there for what to choose; scores then differ from
      the paper's mPLUG numbers) or an object with ``answer(images, questions)`` (:class:`VQAModel`);
    * ``device``: where the VQA model runs; None uses ``EvalInput.device``;
    * ``batch_size``: (image, question) pairs per VQA call;
    * ``write_official_layout``: also write the 2x2 tiles for the official script (:func:`write_official_layout`);
      a run whose images cannot be tiled is scored all the same, with a warning;
    * ``questions_csv``: the question graphs (ELLA's ``dpg_bench.csv`` or a converted ``questions.json``); None
      uses the packaged ``questions.json``;
    * ``official_bug_compatible``: reproduce the official script's numbers, bugs included (ELLA #60 and #61;
      :mod:`moss_eval.quality.dpg.scoring`); default False, the fixed numbers.

    ``evaluate`` returns ``scores`` ``{"overall", <L1 category>...}`` (fractions; the paper's numbers are x100),
    ``tables`` ``categories`` (L1 and L2 rows) and ``prompts``, ``per_image`` answers and scores, and ``info``.
    """

    name = "dpg"

    def __init__(
        self,
        vqa: str | os.PathLike | VQAModel,
        device: str | None = None,
        batch_size: int = 8,
        write_official_layout: bool = True,
        questions_csv: str | os.PathLike | None = None,
        official_bug_compatible: bool = False,
        max_new_tokens: int = 8,
        dtype: str = "auto",
    ):
        if isinstance(vqa, str | os.PathLike):
            if not str(vqa):
                raise ValueError("eval.dpg.vqa is empty: set it to a local transformers VQA folder")
            self.vqa_path: Path | None = Path(vqa).expanduser()
            self._vqa: VQAModel | None = None
        elif callable(getattr(vqa, "answer", None)):
            self.vqa_path, self._vqa = None, vqa
        else:
            raise ValueError(
                f"eval.dpg.vqa={vqa!r}: must be a local VQA model folder or an object with answer(images, questions)"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"eval.dpg.batch_size={batch_size!r}: must be a positive integer")
        self.device = device
        self.batch_size = batch_size
        self.write_official_layout = bool(write_official_layout)
        self.questions_csv = Path(questions_csv).expanduser() if questions_csv not in (None, "") else None
        self.official_bug_compatible = bool(official_bug_compatible)
        self.max_new_tokens = max_new_tokens
        self.dtype = dtype

    def __repr__(self) -> str:
        vqa = self.vqa_path if self.vqa_path is not None else type(self._vqa).__name__
        return f"DPGEvaluator(vqa={str(vqa)!r}, official_bug_compatible={self.official_bug_compatible})"

    # ------------------------------------------------------------------------------------------- weights

    def weight_files(self) -> list[WeightFile]:
        files = []
        if self.vqa_path is not None:
            files.append(
                WeightFile(
                    key="eval.dpg.vqa",
                    path=self.vqa_path,
                    what=(
                        "a transformers VQA model folder (config.json, weights, processor and tokenizer files), "
                        "e.g. Salesforce/blip-vqa-capfilt-large or a Qwen2-VL-style chat model; the official "
                        "mPLUG-large (modelscope) cannot be loaded by transformers"
                    ),
                    kind="dir",
                    contains=("config.json",),
                )
            )
        if self.questions_csv is not None:
            files.append(
                WeightFile(
                    key="eval.dpg.questions_csv",
                    path=self.questions_csv,
                    what="DPG-Bench question graphs: dpg_bench/dpg_bench.csv of TencentQQGYLab/ELLA",
                )
            )
        elif packaged_questions_file() is None:
            files.append(
                WeightFile(
                    key="eval.dpg.questions_csv",
                    path=None,
                    what=(
                        f"DPG-Bench question graphs, not shipped in this moss-eval ({QUESTIONS_FILE} is missing): "
                        "set it to dpg_bench/dpg_bench.csv of TencentQQGYLab/ELLA"
                    ),
                )
            )
        return files

    def _model(self, device: str) -> VQAModel:
        if self._vqa is None:
            from moss_eval.quality.dpg.vqa import TransformersVQA

            self._vqa = TransformersVQA(
                self.vqa_path, device=device, max_new_tokens=self.max_new_tokens, dtype=self.dtype
            )
        return self._vqa

    def _graphs(self) -> dict[str, tuple[DPGQuestion, ...]]:
        if self.questions_csv is None and packaged_questions_file() is None:
            raise FileNotFoundError(
                f"DPG-Bench question graphs are not shipped ({QUESTIONS_FILE} is missing) and "
                "eval.dpg.questions_csv is not set: set it to dpg_bench/dpg_bench.csv of TencentQQGYLab/ELLA"
            )
        prompts = load_prompts(self.questions_csv, official_bug_compatible=self.official_bug_compatible)
        return {p.item_id: p.questions for p in prompts}

    # ------------------------------------------------------------------------------------------- scoring

    def _answer_all(
        self, inputs: EvalInput, images: Sequence[DPGImage], graphs: dict, vqa: VQAModel
    ) -> list[ImageAnswers]:
        """Ask every image its questions, ``batch_size`` (image, question) pairs per call."""
        results = [ImageAnswers(im.record_id, im.item_id, im.sample, answers={}) for im in images]
        pending: list[tuple[int, int, Any, str]] = []  # (image index, question id, PIL image, question)

        def flush() -> None:
            answers = vqa.answer([p[2] for p in pending], [p[3] for p in pending])
            if len(answers) != len(pending):
                raise RuntimeError(f"{vqa!r} returned {len(answers)} answers for {len(pending)} questions")
            for (i, qid, _, _), answer in zip(pending, answers, strict=True):
                results[i].answers[qid] = str(answer)
            pending.clear()

        for i, im in enumerate(images):
            pil = inputs.load_image(im.record)
            for q in graphs[im.item_id]:
                pending.append((i, q.id, pil, q.text))
                if len(pending) >= self.batch_size:
                    flush()
            if (i + 1) % 100 == 0:
                log.info("dpg: asked %d/%d images", i + 1, len(images))
        if pending:
            flush()
        return results

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        images = dpg_images(inputs)
        if not images:
            raise ValueError(f"run {inputs.run_dir}: no records to score")
        graphs = self._graphs()
        run_name = images[0].record.get("run_name")
        unknown = sorted({im.item_id for im in images if im.item_id not in graphs})
        if unknown:
            raise ValueError(
                f"run {run_name!r} ({inputs.run_dir}): DPG item ids {unknown[:5]} are not DPG-Bench prompts"
            )
        items = list(dict.fromkeys(im.item_id for im in images))
        if not self.official_bug_compatible:
            empty = [item for item in items if not graphs[item]]
            if empty:
                raise ValueError(
                    f"DPG question file has no questions for items {empty[:5]} (run {run_name!r})"
                )
            broken = {item: missing_parents(graphs[item]) for item in items if missing_parents(graphs[item])}
            if broken:
                warnings.warn(
                    f"DPG question graphs name parents that are not questions of their prompt, ignored (they "
                    f"cannot fail): {dict(list(broken.items())[:5])}",
                    stacklevel=2,
                )
        vqa = self._model(self.device or inputs.device)
        answered = self._answer_all(inputs, images, graphs, vqa)
        for a in answered:
            if graphs[a.item_id]:
                score_image(graphs[a.item_id], a, self.official_bug_compatible)
            else:  # official: an empty graph divides by zero and the prompt is dropped (bug-compatible only)
                a.error = "no questions"
        scores = aggregate(graphs, answered, self.official_bug_compatible)

        categories = [
            {
                "category": cat,
                "level": level,
                "score": value,
                "score_with_dependency": dep[cat],
                "n_answers": scores.counts[cat],
            }
            for level, table, dep in (
                ("L1", scores.l1, scores.l1_with_dependency),
                ("L2", scores.l2, scores.l2_with_dependency),
            )
            for cat, value in table.items()
        ]
        prompts = [
            {k: row[k] for k in ("item_id", "score", "n_images", "n_questions")}
            | {"min_image_score": min(row["image_scores"]), "max_image_score": max(row["image_scores"])}
            for row in scores.prompts
        ]
        per_image = {
            a.record_id: {
                "item_id": a.item_id,
                "sample": a.sample,
                "score": a.score,
                "answers": {str(q): ans for q, ans in a.answers.items()},
                "correct": {str(q): int(s) for q, s in a.scores.items()},
            }
            | ({"error": a.error} if a.error else {})
            for a in answered
        }
        samples = Counter(len({im.sample for im in images if im.item_id == item}) for item in items)
        info: dict[str, Any] = {
            "vqa": vqa.describe() if hasattr(vqa, "describe") else repr(vqa),
            "rule": "official_bug_compatible" if self.official_bug_compatible else "fixed (ELLA #60, #61)",
            "answer_rule": 'exact "yes"',
            "category_answers": (
                "raw answers of the last sample (ELLA #60)"
                if self.official_bug_compatible
                else "raw answers of all samples; *_with_dependency: after the dependency rule"
            ),
            "questions": str(self.questions_csv or packaged_questions_file()),
            "prompts": len(items),
            "prompts_in_benchmark": NUM_PROMPTS,
            "images": len(images),
            "images_per_prompt": dict(sorted(samples.items())),
            "dropped_prompts": scores.dropped,
            "scale": "fractions in [0, 1]; the paper reports x100",
        }
        if self.write_official_layout:
            try:
                info["official_layout"] = write_official_layout(inputs)
            except ValueError as err:
                warnings.warn(f"DPG official layout not written: {err}", stacklevel=2)
                info["official_layout"] = {"error": str(err)}
        return EvalResult(
            name=self.name,
            scores={"overall": scores.overall, **scores.l1},
            tables={"categories": categories, "prompts": prompts},
            per_image=per_image,
            info=info,
        )
