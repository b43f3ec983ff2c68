"""DPG-Bench scoring rules: yes/no answers, the dependency rule, and the per-image / prompt / category aggregation.

What ``compute_dpg_bench.py`` (TencentQQGYLab/ELLA at 3c228f1) does, per prompt image (a 2x2 tile of 4 samples):

1. each question of the prompt is asked of each sample; a question scores 1 when the answer **is exactly the
   string** ``"yes"`` (mPLUG answers lowercase ``yes`` / ``no``), else 0 (:func:`is_yes`);
2. **dependency rule** (:func:`apply_dependency_rule`): the questions are visited in question-file order and a
   question is set to 0 when any of its parents currently scores 0. Parent id ``0`` means "no parent" and is
   skipped. Scores are changed in place during the visit, so a parent zeroed earlier in the visit zeroes its
   children too (when parents come before their children, as in DSG graphs, this is the transitive rule). A
   parent id that is not a question of the prompt raises ``KeyError`` there, which the script's
   ``try/except`` turns into "Failed filename": **the whole prompt is dropped** from every number;
3. per-sample score = mean of the (dependency-adjusted) question scores; per-prompt score = mean over its samples;
   **DPG-Bench score** = mean over prompts (the paper reports it x100; moss reports fractions in ``[0, 1]``);
4. category scores: each question's score is appended to its L2 category (the ``tuple`` column before ``(``), an
   L1 category (before ``-``) pools its L2 lists, and the score is the mean of the pooled list.

**ELLA issue #60** (open, "only the last image score is used to calculate L1 category score"): the function that
scores one tile returns ``qid2scores_orig``, which is overwritten for each sample and copied *before* the
dependency rule, so the category scores see only the **last** sample of each prompt (bottom-right tile), with raw
(pre-dependency) answers. The overall score is not affected. The fix here: category scores pool the raw answers of
**all** samples (the raw answers stay: that is what the official categories measure, and the variable is named for
it); the dependency-adjusted category means are reported beside them as ``*_with_dependency`` (not official).
``official_bug_compatible=True`` reproduces the official numbers instead: last sample only, plus the reading of
the question file with ELLA issue #61 (first data row skipped, see
:func:`~moss_eval.quality.dpg.data.build_question_graphs`) and dropped prompts on missing parents.

In the fixed reading a missing parent is ignored (it cannot fail) and the evaluator warns, naming the questions;
with the full question file there is none (the only one the official script meets is the row it skips itself).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from moss_eval.quality.dpg.data import DPGQuestion, l1_category

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "DPGScores",
    "ImageAnswers",
    "MissingParentError",
    "VQAModel",
    "aggregate",
    "apply_dependency_rule",
    "is_yes",
    "score_image",
]


@runtime_checkable
class VQAModel(Protocol):
    """A visual question answering model: ``answer(images, questions)[i]`` answers ``questions[i]`` about
    ``images[i]`` (the two lists have the same length), as a short string; DPG counts ``"yes"`` as correct."""

    def answer(self, images: list[Image], questions: list[str]) -> list[str]: ...


class MissingParentError(KeyError):
    """A question names a parent that is not a question of its prompt (the official script drops the prompt)."""


def is_yes(answer: str) -> bool:
    """The official per-question rule: correct iff the answer is exactly ``"yes"``."""
    return answer == "yes"


def apply_dependency_rule(
    questions: Sequence[DPGQuestion], raw: Mapping[int, float], official_bug_compatible: bool = False
) -> dict[int, float]:
    """The scores after the official dependency rule (module docstring, step 2); ``raw`` is not changed.

    A parent id absent from ``raw`` raises :class:`MissingParentError` when ``official_bug_compatible`` (the
    caller drops the prompt, as the official ``try/except`` does) and is ignored otherwise.
    """
    scores = dict(raw)
    for q in questions:
        for parent in q.parents:
            if parent == 0:
                continue
            if parent not in scores:
                if official_bug_compatible:
                    raise MissingParentError(
                        f"question {q.id} depends on question {parent}, which is missing"
                    )
                continue
            if scores[parent] == 0:
                scores[q.id] = 0.0
                break
    return scores


@dataclass
class ImageAnswers:
    """One image's answers and scores: ``raw`` per question (1.0 for yes), ``scores`` after the dependency rule,
    ``score`` their mean (None when the prompt was dropped)."""

    record_id: str
    item_id: str
    sample: int
    answers: dict[int, str]
    raw: dict[int, float] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    score: float | None = None
    error: str | None = None


def score_image(
    questions: Sequence[DPGQuestion], image: ImageAnswers, official_bug_compatible: bool = False
) -> ImageAnswers:
    """Fill ``image.raw``, ``image.scores`` and ``image.score`` from ``image.answers`` (one per question)."""
    if not questions:
        raise ValueError(f"DPG prompt {image.item_id!r} has no questions: the question file lacks it")
    missing = [q.id for q in questions if q.id not in image.answers]
    if missing:
        raise ValueError(f"image {image.record_id}: no answer for questions {missing} of {image.item_id!r}")
    image.raw = {q.id: float(is_yes(image.answers[q.id])) for q in questions}
    try:
        image.scores = apply_dependency_rule(questions, image.raw, official_bug_compatible)
    except MissingParentError as err:
        image.scores, image.score, image.error = {}, None, str(err.args[0])
        return image
    image.score = sum(image.scores.values()) / len(image.scores)
    return image


@dataclass
class DPGScores:
    """Aggregated numbers (fractions in [0, 1]); ``dropped`` lists the prompts the official rule drops."""

    overall: float | None
    l1: dict[str, float]
    l2: dict[str, float]
    l1_with_dependency: dict[str, float]
    l2_with_dependency: dict[str, float]
    counts: dict[str, int]  # category (L1 and L2) -> number of pooled answers
    prompts: list[dict[str, Any]]
    dropped: dict[str, str]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def aggregate(
    graphs: Mapping[str, Sequence[DPGQuestion]],
    images: Sequence[ImageAnswers],
    official_bug_compatible: bool = False,
) -> DPGScores:
    """Per-prompt, category and overall scores of scored images (:func:`score_image`), module docstring steps 3-4.

    ``graphs`` maps each item id to its questions. Prompts are taken in the order of their first image.
    """
    by_item: dict[str, list[ImageAnswers]] = defaultdict(list)
    for im in images:
        by_item[im.item_id].append(im)
    raw_lists: dict[str, list[float]] = defaultdict(list)
    dep_lists: dict[str, list[float]] = defaultdict(list)
    prompt_rows, prompt_scores, dropped = [], [], {}
    for item_id, item_images in by_item.items():
        item_images = sorted(item_images, key=lambda im: im.sample)
        questions = graphs[item_id]
        failed = [im for im in item_images if im.score is None]
        if failed:
            dropped[item_id] = failed[0].error or "not scored"
            continue
        score = statistics.fmean(im.score for im in item_images)
        prompt_scores.append(score)
        prompt_rows.append(
            {
                "item_id": item_id,
                "score": score,
                "n_images": len(item_images),
                "n_questions": len(questions),
                "image_scores": [im.score for im in item_images],
                "samples": [im.sample for im in item_images],
            }
        )
        # ELLA #60: the official categories see only the last sample's raw answers.
        category_images = item_images[-1:] if official_bug_compatible else item_images
        for im in category_images:
            for q in questions:
                raw_lists[q.category].append(im.raw[q.id])
        for im in item_images:
            for q in questions:
                dep_lists[q.category].append(im.scores[q.id])

    def pooled(lists: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
        l1_lists: dict[str, list[float]] = defaultdict(list)
        for cat, values in lists.items():
            l1_lists[l1_category(cat)].extend(values)
        counts = {cat: len(v) for cat, v in {**lists, **l1_lists}.items()}
        l1 = {cat: statistics.fmean(v) for cat, v in sorted(l1_lists.items())}
        l2 = {cat: statistics.fmean(v) for cat, v in sorted(lists.items())}
        return l1, l2, counts

    l1, l2, counts = pooled(raw_lists)
    l1_dep, l2_dep, _ = pooled(dep_lists)
    return DPGScores(
        overall=_mean(prompt_scores),
        l1=l1,
        l2=l2,
        l1_with_dependency=l1_dep,
        l2_with_dependency=l2_dep,
        counts=counts,
        prompts=prompt_rows,
        dropped=dropped,
    )
