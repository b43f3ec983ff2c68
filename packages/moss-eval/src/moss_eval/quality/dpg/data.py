"""DPG-Bench's prompts and question graphs (TencentQQGYLab/ELLA ``dpg_bench/``, Apache-2.0).

Two files under ``dpg/data/`` (see the README there for the source commit and the licence):

* ``prompts.jsonl`` — the 1,065 official prompts, one ``{"item_id", "prompt"}`` object a line. ``item_id`` is the
  official prompt file's stem (``partiprompts97`` for ``dpg_bench/prompts/partiprompts97.txt``), ``prompt`` its
  text with surrounding whitespace stripped. The order is :func:`natural_key` of the stems (numeric stems first,
  then by source name and number): the official script takes the files in ``os.listdir`` order, which has no
  defined order, so this fixed order is ours and never changes (generation ids and seeds depend on it).
* ``questions.json`` — the question graphs of ``dpg_bench/dpg_bench.csv``, compacted by
  :func:`convert_official_csv` (the CSV repeats the prompt text on each of its ~8k rows). Rows keep the CSV order,
  including the first data row that the official script skips (ELLA issue #61), so both the fixed and the
  bug-compatible readings can be built from it.

:func:`load_prompts` returns :class:`DPGPrompt` objects with their :class:`DPGQuestion` graphs. The question file
is read from ``questions_csv`` when given (the official CSV or a converted ``questions.json``), else from the
packaged ``questions.json``. When neither exists the prompts come without questions (``questions == ()``) and a
warning says so; generation needs only the prompts, and :class:`~moss_eval.quality.dpg.DPGEvaluator` lists the
question file among its weight files, so a missing file is reported before any image is generated.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moss_eval.records import atomic_write_text

__all__ = [
    "DATA_DIR",
    "IMAGES_PER_PROMPT",
    "NUM_PROMPTS",
    "PROMPTS_FILE",
    "QUESTIONS_FILE",
    "DPGPrompt",
    "DPGQuestion",
    "QuestionRow",
    "build_question_graphs",
    "convert_official_csv",
    "convert_official_prompts",
    "l1_category",
    "load_prompts",
    "load_question_rows",
    "natural_key",
    "packaged_questions_file",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"
QUESTIONS_FILE = DATA_DIR / "questions.json"
NUM_PROMPTS = 1065  # files in dpg_bench/prompts/ at the source commit
IMAGES_PER_PROMPT = 4  # the official protocol: 4 images per prompt, tiled 2x2 (dist_eval.sh PIC_NUM=4)

# The official CSV's columns (``text`` and ``keywords`` are not kept: the prompt is in prompts.jsonl).
CSV_COLUMNS = (
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
)
# What questions.json keeps of each row, in this order.
ROW_FIELDS = (
    "item_id",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question",
)


@dataclass(frozen=True)
class DPGQuestion:
    """One yes/no question of a prompt's graph.

    ``id`` is the CSV's ``proposition_id`` (1-based within the prompt); ``parents`` its ``dependency`` ids, where
    ``0`` means "no parent" (the official rule skips it). ``category`` is what the official script groups by: the
    ``tuple`` column before its first ``(`` (``"entity - whole"``, ``"attribute - color"``); :attr:`l1_category`
    is the part before the first ``-`` (``entity``, ``attribute``, ``relation``, ``global``, ``other``).
    """

    id: int
    text: str
    category: str
    parents: tuple[int, ...]
    proposition: str = ""  # the CSV's ``tuple`` column, e.g. "entity - whole (cabbages)"
    category_broad: str = ""  # the CSV's own category columns (not used by the official scoring)
    category_detailed: str = ""

    @property
    def l1_category(self) -> str:
        return l1_category(self.category)


@dataclass(frozen=True)
class DPGPrompt:
    """One DPG-Bench prompt: ``item_id`` (the official prompt file's stem), its text and its question graph.

    ``categories`` are the L1 categories of its questions in order of first appearance (the CSV has no
    per-prompt category; the questions carry them).
    """

    item_id: str
    prompt: str
    questions: tuple[DPGQuestion, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(q.l1_category for q in self.questions))


@dataclass(frozen=True)
class QuestionRow:
    """One row of the official question table, as parsed (``row`` is its 0-based data-row number)."""

    row: int
    item_id: str
    proposition_id: int
    dependency: tuple[int, ...]
    category_broad: str
    category_detailed: str
    proposition: str  # the ``tuple`` column
    question: str

    def to_json_row(self) -> list[Any]:
        """The row as ``questions.json`` stores it (:data:`ROW_FIELDS`)."""
        return [
            self.item_id,
            self.proposition_id,
            ",".join(map(str, self.dependency)),
            self.category_broad,
            self.category_detailed,
            self.proposition,
            self.question,
        ]

    def to_question(self) -> DPGQuestion:
        return DPGQuestion(
            id=self.proposition_id,
            text=self.question,
            category=category_of(self.proposition),
            parents=self.dependency,
            proposition=self.proposition,
            category_broad=self.category_broad,
            category_detailed=self.category_detailed,
        )


def category_of(proposition: str) -> str:
    """The official L2 category of a ``tuple`` cell: the text before its first ``(``, stripped."""
    return proposition.split("(")[0].strip()


def l1_category(category: str) -> str:
    """The official L1 category of an L2 category: the text before its first ``-``, stripped."""
    return category.split("-")[0].strip()


def natural_key(item_id: str) -> tuple[str, int, str]:
    """Sort key of a prompt stem: ``(source name, number, stem)``; all-digit stems have source ``""``."""
    m = re.fullmatch(r"(.*?)(\d+)", item_id)
    if m is None:
        return (item_id, -1, item_id)
    return (m.group(1), int(m.group(2)), item_id)


# ----------------------------------------------------------------------------------------------- question rows


def _parse_dependency(value: Any, where: str) -> tuple[int, ...]:
    text = str(value).strip()
    if not text:
        raise ValueError(f"{where}: empty dependency (the official format is '0' or a comma list of ids)")
    try:
        return tuple(int(float(part.strip())) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{where}: dependency {value!r} is not a comma list of integers") from None


def _parse_row(n: int, values: dict[str, Any], where: str) -> QuestionRow:
    try:
        qid = int(float(str(values["proposition_id"]).strip()))
    except ValueError:
        raise ValueError(f"{where}: proposition_id {values['proposition_id']!r} is not an integer") from None
    return QuestionRow(
        row=n,
        item_id=str(values["item_id"]).strip(),
        proposition_id=qid,
        dependency=_parse_dependency(values["dependency"], where),
        category_broad=str(values.get("category_broad") or ""),
        category_detailed=str(values.get("category_detailed") or ""),
        proposition=str(values["tuple"]),
        question=str(values["question"]),
    )


def _read_csv_rows(path: Path) -> list[QuestionRow]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: not the official dpg_bench.csv: it lacks the columns {', '.join(missing)} "
                f"(expected {', '.join(CSV_COLUMNS)})"
            )
        rows = []
        for n, line in enumerate(reader):
            values = dict(line, question=line["question_natural_language"])
            rows.append(_parse_row(n, values, f"{path}: data row {n}"))
    return rows


def _read_json_rows(path: Path) -> list[QuestionRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg})") from None
    if (
        not isinstance(data, dict)
        or data.get("fields") != list(ROW_FIELDS)
        or not isinstance(data.get("rows"), list)
    ):
        raise ValueError(
            f"{path}: not a DPG question file written by convert_official_csv "
            f"(expected an object with fields={list(ROW_FIELDS)} and rows=[...])"
        )
    return [
        _parse_row(n, dict(zip(ROW_FIELDS, row, strict=True)), f"{path}: row {n}")
        for n, row in enumerate(data["rows"])
    ]


def load_question_rows(path: str | Path) -> list[QuestionRow]:
    """Every row of a question file in file order: the official ``dpg_bench.csv`` or a converted ``.json``.

    Raises FileNotFoundError when it is not there and ValueError (naming the file and the row) when it is not
    in one of those two formats.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"DPG question file {path} does not exist: it should be dpg_bench/dpg_bench.csv of "
            "TencentQQGYLab/ELLA, or the questions.json convert_official_csv makes of it"
        )
    if path.suffix.lower() == ".csv":
        return _read_csv_rows(path)
    if path.suffix.lower() == ".json":
        return _read_json_rows(path)
    raise ValueError(f"DPG question file {path}: unknown format {path.suffix!r}; allowed: .csv, .json")


def build_question_graphs(
    rows: Sequence[QuestionRow], official_bug_compatible: bool = False
) -> dict[str, tuple[DPGQuestion, ...]]:
    """item_id -> its questions, in row order.

    Fixed reading (default): every row counts, rows of one item are gathered wherever they are, and a repeated
    ``(item_id, proposition_id)`` is a ValueError.

    ``official_bug_compatible=True`` reads the rows as ``prepare_dpg_data`` of ``compute_dpg_bench.py`` does:
    the first data row is skipped (``if i == 0: continue`` on ``DataFrame.iterrows()``, whose index starts at
    the first data row, not the header: ELLA issue #61; that drops question 1 of the first item), an item whose
    rows are not contiguous keeps only its last run of rows (the dict entry is rebuilt when the id changes), and
    a repeated question id overwrites the earlier one.
    """
    graphs: dict[str, dict[int, DPGQuestion]] = {}
    previous = None
    for i, row in enumerate(rows):
        if official_bug_compatible:
            if i == 0:
                continue
            if row.item_id != previous:
                graphs[row.item_id] = {}
            graphs[row.item_id][row.proposition_id] = row.to_question()
            previous = row.item_id
            continue
        questions = graphs.setdefault(row.item_id, {})
        if row.proposition_id in questions:
            raise ValueError(
                f"DPG questions: item {row.item_id!r} has question {row.proposition_id} twice "
                f"(data row {row.row})"
            )
        questions[row.proposition_id] = row.to_question()
    return {item: tuple(qs.values()) for item, qs in graphs.items()}


def missing_parents(questions: Iterable[DPGQuestion]) -> list[tuple[int, int]]:
    """``(question id, parent id)`` for each non-zero parent that is not a question of the same prompt."""
    questions = list(questions)
    ids = {q.id for q in questions}
    return [(q.id, p) for q in questions for p in q.parents if p != 0 and p not in ids]


# ----------------------------------------------------------------------------------------------- prompts


@functools.lru_cache(maxsize=1)
def _prompt_texts() -> tuple[tuple[str, str], ...]:
    items = []
    for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            items.append((obj["item_id"], obj["prompt"]))
    return tuple(items)


def packaged_questions_file() -> Path | None:
    """The packaged ``questions.json``, or None when it is not shipped."""
    return QUESTIONS_FILE if QUESTIONS_FILE.is_file() else None


@functools.lru_cache(maxsize=8)
def _graphs(path: str, official_bug_compatible: bool) -> dict[str, tuple[DPGQuestion, ...]]:
    return build_question_graphs(load_question_rows(path), official_bug_compatible)


@functools.lru_cache(maxsize=1)
def _warn_no_questions() -> None:
    warnings.warn(
        f"DPG-Bench question graphs are not shipped ({QUESTIONS_FILE} is missing): the prompts come without "
        "questions. To score, pass questions_csv=/path/to/ELLA/dpg_bench/dpg_bench.csv (eval.dpg.questions_csv) "
        "or convert it once into the package with convert_official_csv (see dpg/data/README.md).",
        stacklevel=3,
    )


def load_prompts(
    questions_csv: str | Path | None = None, official_bug_compatible: bool = False
) -> list[DPGPrompt]:
    """The 1,065 DPG-Bench prompts in the fixed order of ``prompts.jsonl``, with their question graphs.

    ``questions_csv``: the official ``dpg_bench.csv`` or a converted ``questions.json``; None reads the packaged
    ``questions.json`` and, when it is not shipped, returns the prompts with ``questions=()`` after a warning.
    ``official_bug_compatible`` builds the graphs as the official script does (see
    :func:`build_question_graphs`). The official protocol generates :data:`IMAGES_PER_PROMPT` (4) images per prompt.
    """
    texts = _prompt_texts()
    source = Path(questions_csv).expanduser() if questions_csv is not None else packaged_questions_file()
    if source is None:
        _warn_no_questions()
        return [DPGPrompt(item_id, prompt) for item_id, prompt in texts]
    graphs = _graphs(str(source), bool(official_bug_compatible))
    unknown = sorted(set(graphs) - {item_id for item_id, _ in texts})
    if unknown:
        raise ValueError(
            f"DPG question file {source} has items with no prompt in {PROMPTS_FILE}: {', '.join(unknown[:5])}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    return [DPGPrompt(item_id, prompt, graphs.get(item_id, ())) for item_id, prompt in texts]


# ----------------------------------------------------------------------------------------------- conversion


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_official_prompts(prompts_dir: str | Path, out: str | Path = PROMPTS_FILE) -> int:
    """Write ``prompts.jsonl`` from the official ``dpg_bench/prompts/*.txt``; returns the number of prompts."""
    prompts_dir = Path(prompts_dir)
    files = sorted(prompts_dir.glob("*.txt"), key=lambda p: natural_key(p.stem))
    if not files:
        raise FileNotFoundError(
            f"{prompts_dir} has no .txt prompt files (expected ELLA's dpg_bench/prompts/)"
        )
    lines = [
        json.dumps({"item_id": p.stem, "prompt": p.read_text(encoding="utf-8").strip()}, ensure_ascii=False)
        for p in files
    ]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return len(lines)


def convert_official_csv(csv_path: str | Path, out: str | Path = QUESTIONS_FILE) -> dict[str, Any]:
    """Write the compact ``questions.json`` from the official ``dpg_bench.csv``; returns a summary.

    Keeps every row in CSV order (the first data row included) with :data:`ROW_FIELDS`; drops ``text`` (the prompt,
    already in ``prompts.jsonl``; the summary lists items whose CSV text differs from it) and ``keywords``. The
    file records the CSV's sha256 so the packaged copy can be traced to its source.
    """
    csv_path = Path(csv_path)
    rows = _read_csv_rows(csv_path)
    prompts = dict(_prompt_texts())
    with csv_path.open(newline="", encoding="utf-8") as f:
        csv_text = {line["item_id"].strip(): line["text"].strip() for line in csv.DictReader(f)}
    differing = sorted(k for k, v in csv_text.items() if k in prompts and prompts[k] != v)
    data = {
        "source": "TencentQQGYLab/ELLA dpg_bench/dpg_bench.csv (Apache-2.0), converted by moss_eval",
        "csv_sha256": _sha256(csv_path),
        "fields": list(ROW_FIELDS),
        "rows": [r.to_json_row() for r in rows],
    }
    atomic_write_text(out, json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    items = {r.item_id for r in rows}
    return {
        "rows": len(rows),
        "items": len(items),
        "items_without_prompt": sorted(items - set(prompts)),
        "prompts_without_questions": sorted(set(prompts) - items),
        "csv_text_differs_from_prompt_file": differing,
        "csv_sha256": data["csv_sha256"],
    }


if __name__ == "__main__":  # pragma: no cover - a one-off maintenance command
    import argparse

    parser = argparse.ArgumentParser(
        description="Convert ELLA's dpg_bench files into moss-eval package data."
    )
    parser.add_argument("--prompts-dir", help="ELLA's dpg_bench/prompts/ folder -> data/prompts.jsonl")
    parser.add_argument("--csv", help="ELLA's dpg_bench/dpg_bench.csv -> data/questions.json")
    args = parser.parse_args()
    if args.prompts_dir:
        print(f"{convert_official_prompts(args.prompts_dir)} prompts -> {PROMPTS_FILE}")
        _prompt_texts.cache_clear()
    if args.csv:
        print(json.dumps(convert_official_csv(args.csv), indent=2))
