"""Figures of a sweep summary: a side-by-side image grid (pillow) and a speed–quality plot (matplotlib).

Both libraries are imported here only, on use: moss-eval itself depends on torch and torchmetrics alone. The
plot draws on matplotlib's object API with an Agg canvas (no ``pyplot``), so it needs no display and never
changes the process-wide backend.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from moss_eval.sweep import SweepSummary, twin_keys

log = logging.getLogger(__name__)

GRID_CELL = 192  # px per image cell
GRID_LABEL_WIDTH = 200  # px of the left column holding each row's prompt and seed
GRID_HEADER = 28  # px of the top row holding the run names


def _pil():
    try:
        from PIL import Image, ImageDraw, ImageFont, ImageOps
    except ImportError as err:  # pragma: no cover - pillow is in the workspace; this is for lone installs
        raise ImportError("the image grid needs pillow: uv pip install pillow") from err
    return Image, ImageDraw, ImageFont, ImageOps


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " …"]
    return lines


def grid_size(
    n_rows: int,
    n_cols: int,
    *,
    cell: int = GRID_CELL,
    label_width: int = GRID_LABEL_WIDTH,
    header: int = GRID_HEADER,
) -> tuple[int, int]:
    """``(width, height)`` in px of a grid of ``n_rows`` × ``n_cols`` images."""
    return label_width + n_cols * cell, header + n_rows * cell


def image_grid(
    summary: SweepSummary,
    out_path: str | os.PathLike,
    *,
    max_rows: int = 8,
    cell: int = GRID_CELL,
    label_width: int = GRID_LABEL_WIDTH,
    header: int = GRID_HEADER,
) -> Path:
    """Rows = (prompt, seed) of the first ``max_rows`` baseline images, columns = runs in table order (each
    baseline before its runs), headed by the run label. Each image is scaled to fit its cell keeping its aspect
    ratio; a cell whose run has no such image (no twin, or missing file) is grey and says so."""
    Image, ImageDraw, ImageFont, ImageOps = _pil()
    runs = summary.runs
    baselines = [r for r in runs if summary.baseline_of.get(r.label) == r.label]
    keys: list[tuple] = []  # row keys: (prompt, seed, occurrence), baseline order, first baselines first
    for base in baselines:
        for key in twin_keys(base.records):
            if key not in keys:
                keys.append(key)
    keys = keys[:max_rows]
    width, height = grid_size(len(keys), len(runs), cell=cell, label_width=label_width, header=header)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    line_h = 14
    for c, run in enumerate(runs):
        x0 = label_width + c * cell
        name = _wrap(draw, run.label, font, cell - 8, max_lines=1)[0]
        draw.text((x0 + 4, (header - line_h) // 2), name, fill="black", font=font)
        by_key = twin_keys(run.records)
        for r, key in enumerate(keys):
            y0 = header + r * cell
            record = by_key.get(key)
            path = run.image_path(record) if record is not None else None
            if path is None or not path.is_file():
                draw.rectangle((x0 + 1, y0 + 1, x0 + cell - 2, y0 + cell - 2), fill=(200, 200, 200))
                draw.text(
                    (x0 + 8, y0 + cell // 2 - line_h),
                    "not in this run" if path is None else "file missing",
                    fill="black",
                    font=font,
                )
                continue
            with Image.open(path) as img:
                thumb = ImageOps.contain(img.convert("RGB"), (cell - 2, cell - 2))
            canvas.paste(
                thumb, (x0 + 1 + (cell - 2 - thumb.width) // 2, y0 + 1 + (cell - 2 - thumb.height) // 2)
            )
    for r, (prompt, seed, _) in enumerate(keys):
        y0 = header + r * cell
        lines = _wrap(draw, prompt, font, label_width - 12, max_lines=max(1, cell // line_h - 2))
        for i, text in enumerate([*lines, f"seed {seed}"]):
            draw.text((6, y0 + 6 + i * line_h), text, fill="black", font=font)
    out_path = Path(out_path)
    canvas.save(out_path)
    return out_path


def _metric_points(summary: SweepSummary, metric: str) -> list[tuple[str, float, float]]:
    points = []
    for row in summary.rows:
        if summary.baseline_of.get(row["run"]) == row["run"]:
            continue  # the baseline is the reference line, not a point
        if row["speedup"] is None or row[metric] is None:
            continue
        points.append((row["run"], float(row["speedup"]), float(row[metric])))
    return points


def speed_quality_plot(
    summary: SweepSummary, out_path: str | os.PathLike, *, metrics: tuple[str, ...] = ("psnr", "ssim")
) -> Path:
    """One panel per metric: x = paired speed-up, y = mean fidelity to the baseline, one labelled point per run.

    A PSNR of ``inf`` (images identical to the baseline) is drawn at the top of the panel with a hollow marker
    and ``(∞)`` in its label. Runs without a speed-up or fidelity (no baseline, no pairs) are left out with a
    warning naming them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is in the workspace; this is for lone installs
        raise ImportError("the speed-quality plot needs matplotlib: uv pip install matplotlib") from err

    labels = {"psnr": "PSNR vs baseline (dB)", "ssim": "SSIM vs baseline", "ms_ssim": "MS-SSIM vs baseline"}
    fig = Figure(figsize=(5.5 * len(metrics), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    left_out: set[str] = set()
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        points = _metric_points(summary, metric)
        left_out |= {r["run"] for r in summary.rows if summary.baseline_of.get(r["run"]) != r["run"]} - {
            p[0] for p in points
        }
        finite = [y for _, _, y in points if math.isfinite(y)]
        top = (max(finite) if finite else 1.0) * 1.05 + (0 if finite else 1.0)
        for label, x, y in points:
            capped = not math.isfinite(y)
            y = top if capped else y
            ax.scatter([x], [y], s=40, facecolors="none" if capped else "C0", edgecolors="C0", zorder=3)
            ax.annotate(
                label + (" (∞)" if capped else ""),
                (x, y),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="baseline (1×)")
        ax.margins(x=0.2, y=0.15)  # room for the point labels
        ax.set_xlabel(f"speed-up vs baseline ({summary.latency} latency, paired median)")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        if not points:
            ax.text(0.5, 0.5, "no paired runs", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle(f"MoSs speed vs fidelity: {summary.root.name}")
    if left_out:
        message = f"speed-quality plot leaves out {', '.join(sorted(left_out))} (no speed-up or fidelity)"
        summary.notes.append(message)
        log.warning(message)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=120)
    return out_path


def write_figures(summary: SweepSummary, out_dir: str | os.PathLike, **grid_kwargs: Any) -> dict[str, Path]:
    """``grid.png`` and ``speed_quality.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "grid": image_grid(summary, out / "grid.png", **grid_kwargs),
        "speed_quality": speed_quality_plot(summary, out / "speed_quality.png"),
    }
