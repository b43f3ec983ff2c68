"""Summarise a sweep of ``tools/run.py`` run directories: paired speed-ups and fidelity against the baseline.

A **run directory** (:class:`moss_eval.records.RunDirectory`) is any directory holding ``records.jsonl``
(written when a run ends) or ``records/*.json`` (one JSON object per finished image, same schema, written as the
run goes; these win when the two disagree, see :func:`load_run`). Each record is one image, read as a
:class:`moss_eval.records.ImageRecord` (which owns the format and the required keys, ``REQUIRED_FIELDS``)::

    {"id", "index", "prompt", "seed", "run_name", "model", "moss", "attn", "dispatch", "image", "resolution",
     "aspect_ratio", "batch_size", "latency_s": {"backbone", "total", ...}, "tokens_processed",
     "tokens_per_pass", "forward_passes", "kv_cache_bytes", "peak_memory_bytes", "flops", "fallbacks", "rank"}

and any further keys, flat. Here records are handled as the dicts :meth:`ImageRecord.to_dict` gives (absent
optional keys read as ``None``, or ``[]`` for lists).

Directory names are never parsed: everything comes from the records.

**Baselines.** A baseline run is one whose records all match the selector (default ``moss=off``; any
``KEY=VALUE[,KEY=VALUE…]`` over record fields, compared as strings). Every other run is matched to the baseline
with the same ``model``, ``resolution`` and ``aspect_ratio`` — the settings that decide the baseline's images and
latency. ``attn`` and ``dispatch`` only configure the MoSs stage, which a baseline never runs, so they are not
part of the key; when several baselines share the key, the one with the same ``attn`` (then ``dispatch``) is
preferred and, if that still leaves several, the first by path is used with a warning. A sweep without any
baseline is an error (:class:`NoBaselineError`); a run without a matching baseline is reported with empty
speed-up and fidelity columns and a warning.

**Pairs.** An image is paired with its baseline *twin*: the baseline record with the same ``(prompt, seed)``
(repeated prompt/seed pairs are matched in ``index`` order). Images without a twin are counted in ``no_twin``
(and baseline images the run lacks in ``baseline_only``) and named in a warning, never dropped silently.

* speed-up = median over pairs of ``baseline latency / run latency`` (``latency_s["backbone"]`` by default, as in
  the paper, which excludes the VQ-VAE decoder; ``speedup_total`` uses ``latency_s["total"]``);
* its spread = ``speedup_min`` / ``speedup_max``, the smallest and largest paired ratio — always the full range,
  whatever the number of pairs (with a handful of images, quartiles would only be interpolation), with ``pairs``
  the number of ratios; the table shows ``2.12× [0.53–3.71], n=2``. The median of the run's latencies
  (``latency_s``) and the paired median can disagree on which is faster when the ratios are spread; such a row
  gets a note;
* PSNR / SSIM / MS-SSIM = mean over pairs of :func:`moss_eval.fidelity` of the run's PNG against its twin's PNG
  (a pair identical to its twin has PSNR ``inf``, so the mean is ``inf`` too; JSON writes it as ``"inf"``);
* KV cache GiB, tokens processed, forward passes, peak memory, FLOPs = medians over the run's records.

Reading PNGs needs pillow (imported on first use; moss-eval itself depends only on torch and torchmetrics).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moss_eval.fidelity import fidelity
from moss_eval.records import REQUIRED_FIELDS, RUN_FIELDS, RecordFormatError, RunDirectory

log = logging.getLogger(__name__)

DEFAULT_BASELINE = "moss=off"
REQUIRED_KEYS = REQUIRED_FIELDS  # the keys a record must have (owned by moss_eval.records)
# What must agree between a run and its baseline (see the module docstring for why attn/dispatch are not here).
BASELINE_KEY = ("model", "resolution", "aspect_ratio")
GIB = 2**30

# Quality next to speed, as the paper's Table 1 puts it: (column, evaluator JSON <run>/eval/<name>.json, score key).
# Filled when the run was evaluated (tools/run.py 'eval=[...]' or tools/evaluate.py); empty otherwise.
QUALITY_COLUMNS = (
    ("geneval", "geneval", "overall"),
    ("shapes", "shapes", "overall"),
    ("dpg", "dpg", "overall"),
    ("hps", "hps", "hps_mean"),
    ("imagereward", "imagereward", "imagereward_mean"),
    ("clip_score", "clip_score", "clip_score"),
    ("fid", "fid", "fid"),
    ("lpips", "fidelity", "lpips_mean"),
)
QUALITY_HEADERS = {
    "geneval": ("GenEval", "{:.3f}"),
    "shapes": ("Shapes-GenEval", "{:.3f}"),
    "dpg": ("DPG", "{:.2f}"),
    "hps": ("HPSv2.1", "{:.2f}"),
    "imagereward": ("ImageReward", "{:.3f}"),
    "clip_score": ("CLIP", "{:.2f}"),
    "fid": ("FID", "{:.2f}"),
    "lpips": ("LPIPS", "{:.4f}"),
}

# Row fields in the order of the CSV / JSON outputs.
COLUMNS = (
    "run",
    "moss",
    "attn",
    "dispatch",
    "model",
    "resolution",
    "images",
    "baseline",
    "pairs",
    "no_twin",
    "baseline_only",
    "latency_s",
    "total_s",
    "speedup",
    "speedup_min",
    "speedup_max",
    "speedup_total",
    "kv_cache_gib",
    "tokens_processed",
    "forward_passes",
    "peak_memory_gib",
    "tflops",
    "fallback_images",
    "psnr",
    "ssim",
    "ms_ssim",
    "fidelity_pairs",
    *(column for column, _, _ in QUALITY_COLUMNS),
    "missing_images",
    "run_dir",
)
PAIR_COLUMNS = (
    "run",
    "id",
    "baseline_id",
    "prompt",
    "seed",
    "ratio",
    "ratio_total",
    "psnr",
    "ssim",
    "ms_ssim",
)
# (field, header, format) of the markdown / printed table; the CSV and JSON carry every COLUMNS field.
TABLE_COLUMNS = (
    ("run", "run", "{}"),
    ("moss", "moss", "{}"),
    ("attn", "attn", "{}"),
    ("images", "images", "{}"),
    ("latency_s", "{latency} s (median)", "{:.4g}"),
    ("speedup", "speedup", "{:.2f}×"),
    ("kv_cache_gib", "KV GiB", "{:.4g}"),
    ("tokens_processed", "tokens", "{:g}"),
    ("forward_passes", "passes", "{:g}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("ms_ssim", "MS-SSIM", "{:.4f}"),
    ("pairs", "pairs", "{}"),
    ("no_twin", "no twin", "{}"),
)


class NoBaselineError(ValueError):
    """The sweep has no run matching the baseline selector."""


class SweepFormatError(ValueError):
    """A run directory's records are missing or malformed."""


class EmptyRunError(SweepFormatError):
    """A run directory without any record yet (a run that has just started)."""


@dataclass
class Run:
    """One run directory and its records (sorted by ``index``)."""

    path: Path
    records: list[dict[str, Any]]
    source_note: str | None = None  # why records/*.json were read instead of records.jsonl, if they were
    label: str = ""  # unique display name; the run_name unless two runs share it

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    def value(self, key: str) -> Any:
        """A run-level field (the same in every record; see ``RUN_FIELDS``)."""
        return self.records[0].get(key)

    @property
    def name(self) -> str:
        return str(self.value("run_name"))

    def image_path(self, record: dict[str, Any]) -> Path:
        return self.path / record["image"]

    def matches(self, selector: dict[str, str]) -> bool:
        return all(str(self.value(k)) == v for k, v in selector.items())


@dataclass
class SweepSummary:
    root: Path
    rows: list[dict[str, Any]]  # one per run, baselines first within their group; keys = COLUMNS
    pairs: list[dict[str, Any]]  # one per paired image; keys = PAIR_COLUMNS
    runs: list[Run]  # in row order
    baseline_of: dict[str, str | None]  # run label -> its baseline's label (a baseline maps to itself)
    baseline_selector: str
    latency: str
    notes: list[str] = field(default_factory=list)  # every warning issued while summarising

    def run(self, label: str) -> Run:
        return next(r for r in self.runs if r.label == label)

    def row(self, label: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["run"] == label)


def _warn(notes: list[str], message: str) -> None:
    notes.append(message)
    log.warning(message)


# ----------------------------------------------------------------------------------------------- loading


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (itself included) holding ``records.jsonl`` or ``records/``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist or is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "records.jsonl" in filenames or "records" in dirnames:
            found.append(Path(dirpath))
            dirnames.clear()  # a run directory's own folders (images/, records/, .hydra/) hold no runs
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _read_jsonl(run_dir: RunDirectory) -> list[dict[str, Any]]:
    try:
        return [r.to_dict() for r in run_dir.read_jsonl()]
    except RecordFormatError as err:
        raise SweepFormatError(str(err)) from None


def _read_record_files(run_dir: RunDirectory) -> list[dict[str, Any]]:
    try:
        return [r.to_dict() for r in run_dir.read_records()]
    except RecordFormatError as err:
        raise SweepFormatError(str(err)) from None


def load_run(path: str | os.PathLike) -> Run:
    """Read one run directory.

    ``records/*.json`` (one file per finished image, written after its PNG) is what the run loop writes as it
    goes; ``records.jsonl`` is rebuilt from them when a run ends. So the files win when both exist and disagree
    on the set of ids (a run still going, or resumed after a stop), and the JSONL alone is read when there is no
    ``records/`` (e.g. results copied without it). Reading ``records/`` is noted in :attr:`Run.source_note`.
    """
    path = Path(path)
    run_dir = RunDirectory(path)
    from_jsonl = _read_jsonl(run_dir) if run_dir.records_jsonl.is_file() else None
    from_files = _read_record_files(run_dir) if run_dir.records_dir.is_dir() else None
    note = None
    if from_files:
        ids = sorted(str(r.get("id")) for r in from_files)
        if from_jsonl is None:
            records = from_files
            note = f"no records.jsonl in {path}: read {len(records)} records/*.json (unfinished run)"
        elif sorted(str(r.get("id")) for r in from_jsonl) != ids:
            records = from_files
            note = (
                f"records.jsonl in {path} ({len(from_jsonl)} records) does not match records/ "
                f"({len(from_files)}): read records/*.json (unfinished or resumed run)"
            )
        else:
            records = from_jsonl
    else:
        records = from_jsonl or []
    if not records:
        raise EmptyRunError(f"{path}: no records (records.jsonl empty or records/ has no *.json)")
    for key in RUN_FIELDS:
        values = {json.dumps(r.get(key)) for r in records}
        if len(values) > 1:
            raise SweepFormatError(
                f"{path}: records disagree on {key} ({', '.join(sorted(values))}); one run per dir"
            )
    records.sort(
        key=lambda r: (r.get("index") if isinstance(r.get("index"), int) else math.inf, str(r.get("id")))
    )
    return Run(path=path, records=records, source_note=note)


def load_sweep(root: str | os.PathLike, notes: list[str] | None = None) -> list[Run]:
    """Every run under ``root``; runs whose directory is empty of records are skipped with a warning."""
    notes = [] if notes is None else notes
    runs = []
    for path in find_run_dirs(root):
        try:
            run = load_run(path)
        except EmptyRunError:
            _warn(notes, f"skipped {path}: it has no records yet")
            continue
        if run.source_note:
            _warn(notes, f"{run.name}: {run.source_note}")
        runs.append(run)
    if not runs:
        raise SweepFormatError(f"no run directories (records.jsonl or records/) under {root}")
    names = defaultdict(list)
    for run in runs:
        names[run.name].append(run)
    for name, same in names.items():
        if len(same) > 1:
            for run in same:
                run.label = f"{name} ({run.path.relative_to(root) if run.path != Path(root) else '.'})"
            _warn(notes, f"{len(same)} runs are named {name!r}; labelled by directory")
    return runs


# ----------------------------------------------------------------------------------------------- matching


def parse_selector(text: str) -> dict[str, str]:
    """``"moss=off"`` or ``"moss=off,model=2b"`` → ``{"moss": "off", ...}``."""
    selector = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"baseline selector must be KEY=VALUE[,KEY=VALUE...], got {text!r}")
        selector[key.strip()] = value.strip()
    return selector


def match_baselines(
    runs: Sequence[Run], selector: str = DEFAULT_BASELINE, notes: list[str] | None = None
) -> dict[str, Run | None]:
    """Run label → its baseline (see the module docstring for the rule); baselines map to themselves."""
    notes = [] if notes is None else notes
    wanted = parse_selector(selector)
    baselines = [r for r in runs if r.matches(wanted)]
    if not baselines:
        found = "; ".join(f"{r.label} ({', '.join(f'{k}={r.value(k)}' for k in wanted)})" for r in runs)
        raise NoBaselineError(
            f"no baseline: no run matches {selector} (runs: {found}); pass --baseline KEY=VALUE to pick one"
        )
    out: dict[str, Run | None] = {b.label: b for b in baselines}
    for run in runs:
        if run.label in out:
            continue
        key = {k: run.value(k) for k in BASELINE_KEY}
        candidates = [b for b in baselines if all(b.value(k) == v for k, v in key.items())]
        for tie_break in ("attn", "dispatch"):
            same = [b for b in candidates if b.value(tie_break) == run.value(tie_break)]
            if len(candidates) > 1 and same:
                candidates = same
        if not candidates:
            _warn(notes, f"{run.label}: no baseline with {', '.join(f'{k}={v}' for k, v in key.items())}")
            out[run.label] = None
            continue
        if len(candidates) > 1:
            _warn(
                notes,
                f"{run.label}: {len(candidates)} baselines match ({', '.join(b.label for b in candidates)}); "
                f"using {candidates[0].label}",
            )
        out[run.label] = candidates[0]
    return out


def twin_keys(records: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """``(prompt, seed, occurrence)`` → record; repeated prompt/seed pairs are told apart by index order."""
    seen: dict[tuple, int] = defaultdict(int)
    out = {}
    for r in records:
        base = (r["prompt"], r["seed"])
        out[(*base, seen[base])] = r
        seen[base] += 1
    return out


def pair_records(run: Run, baseline: Run) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """``(pairs, no_twin, baseline_only)``: (run record, baseline twin) pairs in the run's index order."""
    mine, theirs = twin_keys(run.records), twin_keys(baseline.records)
    pairs = [(r, theirs[k]) for k, r in mine.items() if k in theirs]
    no_twin = [r for k, r in mine.items() if k not in theirs]
    baseline_only = [r for k, r in theirs.items() if k not in mine]
    return pairs, no_twin, baseline_only


# ----------------------------------------------------------------------------------------------- numbers


def _median(values: Iterable[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _mean(values: Iterable[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _latency(record: dict[str, Any], key: str, where: Run) -> float:
    value = record["latency_s"].get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise SweepFormatError(
            f"{where.label}: record {record.get('id')} has latency_s[{key!r}] = {value!r}; need seconds > 0"
        )
    return float(value)


def load_png(path: str | os.PathLike) -> torch.Tensor:
    """A PNG as uint8 ``(H, W, 3)`` (grey and RGBA images are converted to RGB; alpha is dropped)."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - pillow is in the workspace; this is for lone installs
        raise ImportError("reading images needs pillow: uv pip install pillow") from err
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        w, h = rgb.size
        # bytearray: torch.frombuffer wants a writable buffer; no NumPy needed.
        return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(h, w, 3)


def _base_row(run: Run, latency: str, root: Path) -> dict[str, Any]:
    recs = run.records
    flops = _median(r.get("flops") for r in recs)
    peak = _median(r.get("peak_memory_bytes") for r in recs)
    return {
        "run": run.label,
        "moss": run.value("moss"),
        "attn": run.value("attn"),
        "dispatch": run.value("dispatch"),
        "model": run.value("model"),
        "resolution": run.value("resolution"),
        "images": len(recs),
        "latency_s": _median(_latency(r, latency, run) for r in recs),
        "total_s": _median(r["latency_s"].get("total") for r in recs),
        "kv_cache_gib": _median(r["kv_cache_bytes"] / GIB for r in recs if r["kv_cache_bytes"] is not None),
        "tokens_processed": _median(r["tokens_processed"] for r in recs),
        "forward_passes": _median(r["forward_passes"] for r in recs),
        "peak_memory_gib": None if peak is None else peak / GIB,
        "tflops": None if flops is None else flops / 1e12,
        "fallback_images": sum(1 for r in recs if r.get("fallbacks")),
        "run_dir": str(run.path.relative_to(root)) if run.path != root else ".",
        **read_quality(run.path),
    }


def read_quality(run_dir: str | os.PathLike) -> dict[str, float | None]:
    """The headline quality scores of a run's ``eval/<name>.json`` files (see :data:`QUALITY_COLUMNS`)."""
    out: dict[str, float | None] = {}
    for column, name, key in QUALITY_COLUMNS:
        path = Path(run_dir) / "eval" / f"{name}.json"
        if not path.is_file():
            continue
        try:
            value = (json.loads(path.read_text()).get("scores") or {}).get(key)
        except (OSError, json.JSONDecodeError) as err:
            log.warning("%s: unreadable (%s); its scores are left out", path, err)
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[column] = float(value)
    return out


def summarize_run(
    run: Run,
    baseline: Run | None,
    *,
    root: Path,
    latency: str = "backbone",
    fidelity_limit: int | None = None,
    notes: list[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One table row for ``run`` and its per-pair rows (see the module docstring for every number)."""
    notes = [] if notes is None else notes
    row = dict.fromkeys(COLUMNS)
    row.update(_base_row(run, latency, root))
    row["baseline"] = baseline.label if baseline is not None else None
    if row["fallback_images"]:
        kinds = sorted({str(f) for r in run.records for f in (r.get("fallbacks") or [])})
        _warn(notes, f"{run.label}: {row['fallback_images']} image(s) used a fallback: {', '.join(kinds)}")
    if baseline is None:
        return row, []
    if baseline is run:  # the reference itself: speed-up 1 by definition, fidelity not meaningful
        row.update(pairs=len(run.records), no_twin=0, baseline_only=0, speedup=1.0, speedup_total=1.0)
        return row, []

    pairs, no_twin, baseline_only = pair_records(run, baseline)
    row.update(pairs=len(pairs), no_twin=len(no_twin), baseline_only=len(baseline_only))
    if no_twin:
        ids = ", ".join(str(r.get("id")) for r in no_twin[:5]) + (" …" if len(no_twin) > 5 else "")
        _warn(
            notes,
            f"{run.label}: {len(no_twin)} image(s) have no twin (same prompt+seed) in {baseline.label}: {ids}",
        )
    if baseline_only:
        _warn(notes, f"{run.label}: lacks {len(baseline_only)} image(s) that {baseline.label} has")

    pair_rows, missing = [], 0
    limit = len(pairs) if fidelity_limit is None else min(fidelity_limit, len(pairs))
    for n, (mine, twin) in enumerate(pairs):
        pair = dict.fromkeys(PAIR_COLUMNS)
        pair.update(
            run=run.label,
            id=mine.get("id"),
            baseline_id=twin.get("id"),
            prompt=mine["prompt"],
            seed=mine["seed"],
            ratio=_latency(twin, latency, baseline) / _latency(mine, latency, run),
        )
        total_mine, total_twin = mine["latency_s"].get("total"), twin["latency_s"].get("total")
        if total_mine and total_twin:
            pair["ratio_total"] = total_twin / total_mine
        if n < limit:
            a, b = run.image_path(mine), baseline.image_path(twin)
            if not (a.is_file() and b.is_file()):
                missing += 1
            else:
                try:
                    pair.update(fidelity(load_png(a), load_png(b)))
                except ValueError as err:
                    raise ValueError(f"{a} vs its baseline twin {b}: {err}") from None
        pair_rows.append(pair)
    if missing:
        _warn(notes, f"{run.label}: {missing} pair(s) lack an image file; fidelity uses the other pairs")
    if limit < len(pairs):
        _warn(notes, f"{run.label}: fidelity over the first {limit} of {len(pairs)} pairs (fidelity limit)")

    scored = [p for p in pair_rows if p["psnr"] is not None]
    ratios = [p["ratio"] for p in pair_rows]
    row.update(
        speedup=_median(ratios),
        speedup_min=min(ratios, default=None),
        speedup_max=max(ratios, default=None),
        speedup_total=_median(p["ratio_total"] for p in pair_rows),
        psnr=_mean(p["psnr"] for p in scored),
        ssim=_mean(p["ssim"] for p in scored),
        ms_ssim=_mean(p["ms_ssim"] for p in scored)
        if all(p["ms_ssim"] is not None for p in scored)
        else None,
        fidelity_pairs=len(scored),
        missing_images=missing,
    )
    base_latency = _median(_latency(r, latency, baseline) for r in baseline.records)
    if ratios and (row["latency_s"] - base_latency) * (row["speedup"] - 1) > 0:
        _warn(
            notes,
            f"{run.label}: its median {latency} latency ({row['latency_s']:.4g} s) is "
            f"{'slower' if row['speedup'] > 1 else 'faster'} than {baseline.label}'s ({base_latency:.4g} s), yet "
            f"its paired speed-up is {row['speedup']:.2f}×: the {len(ratios)} paired ratios range "
            f"{row['speedup_min']:.2f}–{row['speedup_max']:.2f}×, so the images disagree on which is faster; "
            "time more images before quoting either",
        )
    return row, pair_rows


def _row_order(run: Run, baseline_of: dict[str, Run | None]) -> tuple:
    base = baseline_of[run.label]
    group = (0, str(base.path)) if base is not None else (1, "")
    return (*group, base is not run, str(run.value("moss")), str(run.value("attn")), run.label)


def summarize_sweep(
    root: str | os.PathLike,
    *,
    baseline: str = DEFAULT_BASELINE,
    latency: str = "backbone",
    fidelity_limit: int | None = None,
) -> SweepSummary:
    """Load every run under ``root``, match baselines, and compute the table (no files are written)."""
    root = Path(root)
    if fidelity_limit is not None and fidelity_limit < 0:
        raise ValueError(f"fidelity_limit must be >= 0 or None, got {fidelity_limit}")
    notes: list[str] = []
    runs = load_sweep(root, notes)
    baseline_of = match_baselines(runs, baseline, notes)
    runs = sorted(runs, key=lambda r: _row_order(r, baseline_of))
    rows, pairs = [], []
    for run in runs:
        row, pair_rows = summarize_run(
            run,
            baseline_of[run.label],
            root=root,
            latency=latency,
            fidelity_limit=fidelity_limit,
            notes=notes,
        )
        rows.append(row)
        pairs.extend(pair_rows)
    if any(r["ms_ssim"] is None and r["fidelity_pairs"] for r in rows):
        notes.append("MS-SSIM is empty where images are smaller than 176 px (5 scales, 11-px window)")
    return SweepSummary(
        root=root,
        rows=rows,
        pairs=pairs,
        runs=runs,
        baseline_of={k: (v.label if v is not None else None) for k, v in baseline_of.items()},
        baseline_selector=baseline,
        latency=latency,
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------- output


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return fmt.format(value)


def _speedup_cell(row: dict[str, Any]) -> str:
    """``2.12× [0.53–3.71], n=2``: the paired median, the range of the paired ratios and their number (a
    baseline row, the reference, is ``1.00×``)."""
    cell = _cell(row["speedup"], "{:.2f}×")
    if row["speedup_min"] is None:
        return cell
    return f"{cell} [{row['speedup_min']:.2f}–{row['speedup_max']:.2f}], n={row['pairs']}"


def markdown_table(summary: SweepSummary) -> str:
    """The summary as a GitHub-flavoured markdown table (the main columns; CSV/JSON hold them all)."""
    # The quality columns of the evaluators some run has results for, after the fidelity ones.
    quality = [
        (c, *QUALITY_HEADERS[c])
        for c, _, _ in QUALITY_COLUMNS
        if any(row.get(c) is not None for row in summary.rows)
    ]
    cut = [k for k, _, _ in TABLE_COLUMNS].index("pairs")
    columns = [*TABLE_COLUMNS[:cut], *quality, *TABLE_COLUMNS[cut:]]
    headers = [h.format(latency=summary.latency) for _, h, _ in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in summary.rows:
        cells = [_speedup_cell(row) if k == "speedup" else _cell(row.get(k), fmt) for k, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(summary: SweepSummary) -> str:
    """Title, rule, table and notes: the content of ``summary_table.md``."""
    parts = [
        f"# MoSs sweep summary: {summary.root.name}",
        "",
        f"Baseline: runs matching `{summary.baseline_selector}`, matched on {', '.join(BASELINE_KEY)}. "
        f"Speed-up: median over images of paired `{summary.latency}` latency ratios (baseline / run), twins "
        "matched on prompt + seed, then [smallest–largest] ratio and n, the number of pairs. "
        "PSNR / SSIM / MS-SSIM: mean over pairs against the baseline twin.",
        "",
        markdown_table(summary),
    ]
    if summary.notes:
        parts += ["", "Notes:", "", *(f"- {n}" for n in summary.notes)]
    return "\n".join(parts) + "\n"


def _json_safe(value: Any) -> Any:
    # Strict JSON has no Infinity/NaN; a PSNR of identical images is inf, so write it as a string.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_summary(summary: SweepSummary, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``summary_table.{md,csv,json}`` and ``summary_pairs.csv`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out / "summary_table.md",
        "csv": out / "summary_table.csv",
        "json": out / "summary_table.json",
        "pairs_csv": out / "summary_pairs.csv",
    }
    paths["md"].write_text(markdown_report(summary))
    for key, columns, rows in (("csv", COLUMNS, summary.rows), ("pairs_csv", PAIR_COLUMNS, summary.pairs)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        paths[key].write_text(buf.getvalue())
    paths["json"].write_text(
        json.dumps(
            {
                "sweep_dir": str(summary.root),
                "baseline": summary.baseline_selector,
                "baseline_key": list(BASELINE_KEY),
                "latency": summary.latency,
                "rows": [{k: _json_safe(v) for k, v in row.items()} for row in summary.rows],
                "notes": summary.notes,
            },
            indent=2,
            allow_nan=False,
        )
        + "\n"
    )
    return paths
