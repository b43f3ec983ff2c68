"""The official GenEval prompts (553, shipped as package data) and the optional prompt-rewrite file.

Each line of ``data/evaluation_metadata.jsonl`` (djghosh13/geneval ``prompts/evaluation_metadata.jsonl``, commit
af4902f, MIT) is one prompt's *metadata*: ``tag`` (the task), ``prompt``, ``include`` (objects that must be
there, each ``{"class", "count"}`` plus an optional ``"color"`` or ``"position": [relation, include_index]``)
and, for counting prompts, ``exclude`` (``count`` or more of the class makes the image wrong). The scoring rules
in :mod:`.rules` read exactly this dict.

Infinity reports GenEval on GPT-rewritten prompts: its ``evaluation/gen_eval/infer4eval.py`` reads
``prompt_rewrite_cache.json``, a JSON object ``{original prompt: rewritten prompt}``, and generates from
``cache[metadata["prompt"]]`` while the metadata (what is scored) stays the original. :func:`load_metadata`
accepts that file; every one of the 553 prompts must be in it (a missing one is an error, never a silent use of
the original prompt). Extra keys are ignored: Infinity's own writer also stores rewritten → rewritten entries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "COCO_CLASSES",
    "COLORS",
    "METADATA_SOURCE",
    "NUM_PROMPTS",
    "POSITIONS",
    "TASKS",
    "GenEvalPrompt",
    "load_metadata",
    "load_rewrites",
]

NUM_PROMPTS = 553
METADATA_SOURCE = (
    "djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f:prompts/evaluation_metadata.jsonl"
)

# The six tasks, in the order they first appear in the official metadata file (summary_scores.py groups with
# sort=False, so this is also the official report order).
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# The official colour list (evaluate_images.py COLORS); the zero-shot colour classifier chooses among these.
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")

POSITIONS = ("left of", "right of", "above", "below")

# The 80 COCO thing classes in the official order (geneval evaluation/object_names.txt). Index i is mmdet's class
# index i: the official evaluator pairs mmdet's per-class result list with this file line by line. The names are
# COCO's, except three renamed for prompts: mouse → computer mouse, remote → tv remote, keyboard → computer keyboard.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class GenEvalPrompt:
    """One GenEval prompt.

    ``index`` is the 0-based line number in the official file (the official output folder is
    ``<index:05d>/``); ``prompt`` is what to generate from (the rewritten prompt when a rewrite file was given,
    else the original); ``original_prompt`` is the official one; ``tag`` the task; ``metadata`` the official
    line's dict, unchanged (what the rules score and what ``<index:05d>/metadata.jsonl`` holds).
    """

    index: int
    prompt: str
    original_prompt: str
    tag: str
    metadata: Mapping[str, Any] = field(compare=False, hash=False)

    @property
    def rewritten(self) -> bool:
        return self.prompt != self.original_prompt


def _read_official() -> list[dict[str, Any]]:
    text = resources.files(__package__).joinpath("data", "evaluation_metadata.jsonl").read_text("utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if len(lines) != NUM_PROMPTS:  # a damaged install, not a user error
        raise RuntimeError(f"the packaged GenEval metadata has {len(lines)} prompts, expected {NUM_PROMPTS}")
    return lines


def load_rewrites(rewrite_file: str | Path) -> dict[str, str]:
    """Read a prompt-rewrite file: a JSON object mapping original prompt → rewritten prompt (strings)."""
    path = Path(rewrite_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"rewrite_file={rewrite_file}: no such file (expected a JSON object mapping each GenEval prompt to "
            "its rewrite, e.g. Infinity's prompt_rewrite_cache.json)"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"rewrite_file={path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"rewrite_file={path}: expected a JSON object {{original prompt: rewritten prompt}}, "
            f"got {type(data).__name__}"
        )
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"rewrite_file={path}: the rewrite of {bad[0]!r} is not a non-empty string")
    return data


def load_metadata(rewrite_file: str | Path | None = None) -> list[GenEvalPrompt]:
    """The 553 official GenEval prompts in file order, optionally with rewritten generation prompts.

    ``rewrite_file``: a JSON object mapping original prompt → rewritten prompt (Infinity's
    ``prompt_rewrite_cache.json``). Every official prompt must be a key; otherwise a ``ValueError`` names the
    file, the first missing prompt and how many are missing.
    """
    rewrites = load_rewrites(rewrite_file) if rewrite_file is not None else None
    prompts = []
    missing = []
    for index, meta in enumerate(_read_official()):
        original = meta["prompt"]
        prompt = original
        if rewrites is not None:
            if original not in rewrites:
                missing.append(original)
                continue
            prompt = rewrites[original]
        prompts.append(GenEvalPrompt(index, prompt, original, meta["tag"], meta))
    if missing:
        raise ValueError(
            f"rewrite_file={rewrite_file}: no rewrite for the GenEval prompt {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the file must map every one of the 553 official prompts (no fallback to the original prompt)"
        )
    return prompts
