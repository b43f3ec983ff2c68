"""Prompt sets: an inline list or a file (.txt, one prompt a line; .jsonl, one object a line)."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from torch.utils.data import Dataset

from moss_run.errors import UserError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Lines end at \n, \r\n or \r only: str.splitlines() would also split at U+2028, \x0c, \x1c…, which JSON strings
# may hold raw, and would number lines differently from an editor.
_LINE_END = re.compile(r"\r\n|\n|\r")
EXCERPT_BYTES = 20  # bytes shown on each side of an undecodable byte


@dataclass(frozen=True)
class PromptItem:
    index: int  # position in the prompt set; also the default id and seed offset
    id: str  # output file stem: images/<id>.png, records/<id>.json
    prompt: str
    seed: int
    aspect_ratio: float | None = None  # None: the run's generation.aspect_ratio
    label: int | None = None  # a class-conditional model's label (the prompt is then the class name)
    # A benchmark item's identity, written into its record so an evaluator finds its metadata:
    # {"name": "geneval", "prompt_index": 17, "sample": 2} or {"name": "dpg", "item_id": "...", "sample": 0}.
    benchmark: dict | None = None

    @property
    def condition(self) -> int | str:
        """What the model is conditioned on: the class label, or the prompt."""
        return self.label if self.label is not None else self.prompt


class PromptDataset(Dataset):
    def __init__(self, items: Sequence[PromptItem], source: str = "<list>"):
        self.items = list(items)
        self.source = source

    @classmethod
    def from_list(cls, prompts: Sequence[str], seed: int = 0) -> PromptDataset:
        if isinstance(prompts, str) or not prompts:
            raise UserError(f"data.prompts must be a non-empty list of prompts, got {prompts!r}")
        items = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise UserError(f"data.prompts[{i}] must be a non-empty string, got {p!r}")
            items.append(PromptItem(i, f"{i:05d}", p.strip(), seed + i))
        return cls(items)

    @classmethod
    def imagenet_classes(cls, classes: Sequence[int | str], seed: int = 0) -> PromptDataset:
        """ImageNet-1k classes for a class-conditional model: ids, or class names (``data.classes``)."""
        from moss_models.var.classes import class_label, imagenet_classes

        if isinstance(classes, str | int) or not classes:
            raise UserError(
                f"data.classes must be a non-empty list of ImageNet class ids or names, got {classes!r}"
            )
        items = []
        for i, value in enumerate(classes):
            try:
                label = class_label(value)
            except ValueError as err:
                raise UserError(f"data.classes[{i}]={value!r}: {err}") from None
            items.append(PromptItem(i, f"{i:05d}", imagenet_classes()[label], seed + i, label=label))
        return cls(items, "<imagenet classes>")

    @classmethod
    def geneval(
        cls,
        limit: int | None = None,
        samples_per_prompt: int = 4,
        rewrite_file: str | None = None,
        seed: int = 0,
    ) -> PromptDataset:
        """GenEval's 553 prompts (the official metadata shipped with moss-eval), ``samples_per_prompt`` images each.

        Image ``n`` of prompt ``p`` has id ``<p:05d>-<n>`` and the fixed seed ``seed + p * samples_per_prompt + n``,
        so a prompt's images do not depend on ``limit``. ``rewrite_file`` (the Infinity authors' published
        ``prompt_rewrite_cache.json``) switches to the rewritten prompts; the scoring uses the original metadata.
        """
        from moss_eval.quality.geneval import load_metadata

        samples = _check_count("data.samples_per_prompt", samples_per_prompt)
        try:
            prompts = load_metadata(rewrite_file)
        except (OSError, ValueError) as err:
            raise UserError(f"data.rewrite_file={rewrite_file!r}: {err}") from None
        items = []
        for p in prompts[: _check_limit(limit, len(prompts))]:
            for n in range(samples):
                items.append(
                    PromptItem(
                        len(items), f"{p.index:05d}-{n}", p.prompt, seed + p.index * samples + n,
                        benchmark={"name": "geneval", "prompt_index": p.index, "sample": n},
                    )
                )  # fmt: skip
        return cls(items, "<geneval>" if rewrite_file is None else f"<geneval, rewritten by {rewrite_file}>")

    @classmethod
    def dpg(cls, limit: int | None = None, samples_per_prompt: int = 4, seed: int = 0) -> PromptDataset:
        """DPG-Bench's 1,065 prompts (shipped with moss-eval), ``samples_per_prompt`` images each (officially 4,
        tiled 2x2; moss scores the images one by one and can write the tiles for the official script).

        Image ``n`` of prompt ``p`` (official order) has id ``dpg-<p:04d>-<n>`` and seed ``seed + p *
        samples_per_prompt + n``.
        """
        from moss_eval.quality.dpg import load_prompts

        samples = _check_count("data.samples_per_prompt", samples_per_prompt)
        prompts = load_prompts()
        items = []
        for p, item in enumerate(prompts[: _check_limit(limit, len(prompts))]):
            for n in range(samples):
                items.append(
                    PromptItem(
                        len(items), f"dpg-{p:04d}-{n}", item.prompt, seed + p * samples + n,
                        benchmark={"name": "dpg", "item_id": item.item_id, "sample": n},
                    )
                )  # fmt: skip
        return cls(items, "<dpg>")

    @classmethod
    def shapes(
        cls,
        n: int = 250,
        prompt_seed: int = 0,
        limit: int | None = None,
        samples_per_prompt: int = 4,
        seed: int = 0,
    ) -> PromptDataset:
        """Shapes-GenEval's procedural prompts (``moss_eval.quality.shapes.evaluation_prompts(n, prompt_seed)``),
        ``samples_per_prompt`` images each; score them with ``eval=[shapes]``.

        Image ``k`` of prompt ``p`` has id ``shapes-<p:04d>-<k>`` and seed ``seed + p * samples_per_prompt + k``.
        Its record's benchmark tag also carries the prompt set (``n``, and ``seed`` = ``prompt_seed``), so the
        evaluator rebuilds exactly these prompts.
        """
        from moss_eval.quality.shapes import evaluation_prompts

        samples = _check_count("data.samples_per_prompt", samples_per_prompt)
        n = _check_count("data.n", n)
        if not isinstance(prompt_seed, int) or isinstance(prompt_seed, bool) or prompt_seed < 0:
            raise UserError(f"data.prompt_seed={prompt_seed!r} is not allowed: it must be an int >= 0")
        prompts = evaluation_prompts(n, prompt_seed)
        items = []
        for p in prompts[: _check_limit(limit, len(prompts))]:
            for k in range(samples):
                items.append(
                    PromptItem(
                        len(items), f"shapes-{p.index:04d}-{k}", p.prompt, seed + p.index * samples + k,
                        benchmark={"name": "shapes", "prompt_index": p.index, "sample": k, "n": n,
                                   "seed": prompt_seed},
                    )
                )  # fmt: skip
        return cls(items, f"<shapes n={n} seed={prompt_seed}>")

    @classmethod
    def from_file(cls, path: str | Path, seed: int = 0) -> PromptDataset:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"prompt file {path} does not exist (data.path)")
        if path.suffix == ".txt":
            items = _read_txt(path, seed)
        elif path.suffix == ".jsonl":
            items = _read_jsonl(path, seed)
        else:
            raise UserError(
                f"prompt file {path} must end in .txt (one prompt a line) or .jsonl, not {path.suffix!r}"
            )
        if not items:
            raise UserError(f"prompt file {path} holds no prompts")
        return cls(items, str(path))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return asdict(self.items[i])

    def subset(self, ids: set[str] | Sequence[str]) -> PromptDataset:
        """The items whose id is in ``ids``, in prompt-set order."""
        keep = set(ids)
        return PromptDataset([it for it in self.items if it.id in keep], self.source)


def _check_count(key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{key}={value!r} is not allowed: it must be an int >= 1")
    return value


def _check_limit(limit, total: int) -> int:
    """``data.limit``: the first N prompts (null: all of them)."""
    if limit is None:
        return total
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise UserError(
            f"data.limit={limit!r} is not allowed: it must be an int >= 1 (the first N prompts) or null"
        )
    return min(limit, total)


def collate_items(batch: list[dict]) -> list[dict]:
    return batch


def _read_lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading byte-order mark is dropped); a byte that is not UTF-8 is a
    :class:`UserError` naming its line and offset, with a short excerpt, never the whole file."""
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start  # byte offset in the file, from 0
        before = data[start:offset].decode("utf-8")  # valid: the error is the first bad byte
        lineno = len(_LINE_END.split(before))
        excerpt = data[max(0, offset - EXCERPT_BYTES) : offset + EXCERPT_BYTES]
        raise UserError(
            f"prompt file {path} (data.path) is not UTF-8 text: line {lineno}, byte offset {offset} "
            f"({err.reason}: 0x{data[offset]:02x}), near {excerpt!r}. Save it as UTF-8, e.g. for a Latin-1 file "
            f"`iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`."
        ) from None
    return _LINE_END.split(text)


def _read_txt(path: Path, seed: int) -> list[PromptItem]:
    items = []
    for line in _read_lines(path):
        if not line.strip():
            continue  # blank lines carry nothing; skipping them keeps indices dense
        i = len(items)
        items.append(PromptItem(i, f"{i:05d}", line.strip(), seed + i))
    return items


def _read_jsonl(path: Path, seed: int) -> list[PromptItem]:
    items: list[PromptItem] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise UserError(
                f'{where}: each line must be a JSON object with a "prompt", got {type(obj).__name__}'
            )
        unknown = sorted(set(obj) - {"prompt", "seed", "id", "aspect_ratio"})
        if unknown:
            raise UserError(f"{where}: unknown field(s) {unknown}; allowed: prompt, seed, id, aspect_ratio")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f'{where}: "prompt" must be a non-empty string, got {prompt!r}')
        i = len(items)
        item_seed = obj.get("seed", seed + i)
        if not isinstance(item_seed, int) or isinstance(item_seed, bool) or not 0 <= item_seed < 2**63:
            raise UserError(f'{where}: "seed" must be a non-negative integer, got {item_seed!r}')
        item_id = str(obj.get("id", f"{i:05d}"))
        if not _SAFE_ID.match(item_id):
            raise UserError(
                f"{where}: \"id\" {item_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
            )
        if item_id in first_line:
            raise UserError(f"{where}: duplicate id {item_id!r} (first used on line {first_line[item_id]})")
        first_line[item_id] = lineno
        ratio = obj.get("aspect_ratio")
        if ratio is not None and (
            not isinstance(ratio, int | float) or isinstance(ratio, bool) or ratio <= 0
        ):
            raise UserError(
                f'{where}: "aspect_ratio" must be a positive number (height / width), got {ratio!r}'
            )
        items.append(
            PromptItem(i, item_id, prompt.strip(), item_seed, None if ratio is None else float(ratio))
        )
    return items
