"""Summarise a sweep of run directories: table, image grid, speed–quality plot, and optionally W&B.

    uv run python tools/summarize.py SWEEP_DIR [--baseline moss=off] [--out DIR] [--wandb-report]

Writes ``summary_table.{md,csv,json}``, ``summary_pairs.csv``, ``grid.png`` and ``speed_quality.png`` into
``--out`` (default: SWEEP_DIR) and prints the table. Logs them to W&B when W&B is online (``--no-wandb`` to
skip); ``--wandb-report`` also publishes a W&B Report and prints its URL. The rules (baseline matching, paired
speed-ups, fidelity) are documented in ``moss_eval.sweep``; the W&B side in ``moss_eval.wandb_report``. A speed-up
is shown with the range of its paired ratios and their number, ``2.12× [0.53–3.71], n=2`` (``speedup_min``,
``speedup_max`` and ``pairs`` in the CSV / JSON).

Exit codes: 0 done; 1 the sweep cannot be summarised (no runs, no baseline, bad records); 3 the table and
figures were written but the requested W&B report was not published.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from moss_eval.figures import write_figures
from moss_eval.sweep import DEFAULT_BASELINE, SweepFormatError, summarize_sweep, write_summary

EXIT_ERROR = 1
EXIT_REPORT_NOT_PUBLISHED = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "sweep_dir", type=Path, help="a sweep directory (searched recursively) or one run directory"
    )
    p.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        help="KEY=VALUE[,...] over record fields (default %(default)s)",
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: SWEEP_DIR)")
    p.add_argument(
        "--latency", default="backbone", help="latency_s stage for speed-ups (default %(default)s)"
    )
    p.add_argument(
        "--grid-rows", type=int, default=8, help="prompt/seed rows in grid.png (default %(default)s)"
    )
    p.add_argument(
        "--fidelity-limit", type=int, default=None, help="score only the first N pairs of each run"
    )
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B even when it is online")
    p.add_argument("--wandb-report", action="store_true", help="publish a W&B Report and print its URL")
    p.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "moss"), help="W&B project")
    p.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (default: yours)")
    p.add_argument("--title", default=None, help="report title (default: 'MoSs sweep: <dir name>')")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="summarize: warning: %(message)s")
    out = args.out or args.sweep_dir
    try:
        summary = summarize_sweep(
            args.sweep_dir, baseline=args.baseline, latency=args.latency, fidelity_limit=args.fidelity_limit
        )
    except (FileNotFoundError, SweepFormatError, ValueError) as err:  # NoBaselineError is a ValueError
        print(f"summarize: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    figures = write_figures(summary, out, max_rows=args.grid_rows)
    paths = write_summary(summary, out)  # after the figures, so their notes reach summary_table.md
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), *figures.values()]))

    if args.no_wandb and not args.wandb_report:
        return 0
    from moss_eval import wandb_report  # wandb is slow to import: only when it may be used

    if args.wandb_report:
        try:
            url = wandb_report.publish_report(
                summary, figures, project=args.project, entity=args.entity, title=args.title
            )
        except wandb_report.WandbUnavailableError as err:
            print(f"summarize: W&B report not published: {err}", file=sys.stderr)
            return EXIT_REPORT_NOT_PUBLISHED
        except Exception as err:  # network / permission errors from W&B: one line, not a traceback wall
            print(f"summarize: W&B report not published: {type(err).__name__}: {err}", file=sys.stderr)
            return EXIT_REPORT_NOT_PUBLISHED
        print(f"W&B report: {url}")
        return 0
    reason = wandb_report.wandb_unavailable_reason()
    if reason is not None:
        print(f"summarize: W&B logging skipped: {reason}")
        return 0
    info = wandb_report.log_summary(summary, figures, project=args.project, entity=args.entity)
    print(f"W&B run: {info['url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
