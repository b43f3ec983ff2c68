"""Send a sweep summary to W&B: log it as a run, and publish a W&B Report built from that run.

Needs ``wandb`` and ``wandb-workspaces`` (imported on use; moss-eval itself does not depend on them).

**When W&B is used.** :func:`wandb_unavailable_reason` returns None only when W&B can work online: ``WANDB_MODE``
is not ``offline`` / ``disabled`` / ``dryrun``, credentials are configured (``WANDB_API_KEY``, an identity token
file, ``~/.netrc`` or wandb's settings — checked with wandb's own loader, without prompting and without a
request), and the W&B server's host answers a TCP connection within a few seconds. Anything else is a one-line
reason for the caller to print.

**What is logged** (:func:`log_summary`, one run with ``job_type="summarize"``): the table as a ``wandb.Table``
under ``summary_table``, and the two figures as ``wandb.Image`` under ``speed_quality`` and ``grid``.

**The report** (:func:`build_report`, which never touches the network and never saves). wandb-workspaces 0.4.13
has no block that uploads a local file: ``wr.Image`` only embeds an image by public URL, and a file logged to a
run has no stable public URL. So the report shows the figures and table the way W&B reports show run media —
panel grids over a runset filtered to the summarize run (``Metric("ID") == run_id``):

* ``wr.H1`` + ``wr.MarkdownBlock``: the summary table as markdown text (rules and notes included); it renders
  on its own, even if the run's media were deleted;
* ``wr.PanelGrid`` with a ``wr.MediaBrowser`` of ``speed_quality`` (the speed–quality plot);
* ``wr.PanelGrid`` with a ``wr.MediaBrowser`` of ``grid`` (the image grid);
* ``wr.PanelGrid`` with a ``wr.WeavePanelSummaryTable`` of ``summary_table`` (the interactive table).

Caveat: a ``Runset`` resolves its project's internal id over the network when the report is serialised
(``Report._to_model`` / ``save``), so an offline test can inspect the blocks but not serialise the panel grids.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moss_eval.sweep import COLUMNS, SweepSummary, markdown_table

TABLE_KEY = "summary_table"
PLOT_KEY = "speed_quality"
GRID_KEY = "grid"
OFFLINE_MODES = ("offline", "disabled", "dryrun")


class WandbUnavailableError(RuntimeError):
    """W&B cannot be used online here; the message is the one-line reason."""


def _base_url() -> str:
    from wandb.sdk import wandb_setup  # wandb's resolved settings: WANDB_BASE_URL, settings files, default

    return str(wandb_setup.singleton().settings.base_url)


def _has_credentials(base_url: str) -> bool:
    # wandb's own lookup (environment, netrc, settings) with prompt=False: no interactive prompt and no request.
    from wandb.sdk.lib import wbauth

    auth = wbauth.authenticate_session(
        host=base_url, source="moss summarize", prompt=False, verify=False, update_session=False
    )
    return auth is not None


def wandb_unavailable_reason(
    env: Mapping[str, str] | None = None, *, probe_timeout: float = 5.0
) -> str | None:
    """None if W&B can be used online; otherwise why not, in one line (see the module docstring)."""
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode in OFFLINE_MODES:
        return f"WANDB_MODE={mode}"
    if env.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "WANDB_DISABLED is set"
    try:
        import wandb  # noqa: F401
        import wandb_workspaces  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (uv pip install wandb wandb-workspaces)"
    base_url = _base_url()
    try:
        if not _has_credentials(base_url):
            return f"no W&B API key for {base_url} (set WANDB_API_KEY or run `wandb login`)"
    except Exception as err:  # an invalid key format or a changed wandb API: say which, don't guess
        return f"cannot check W&B credentials: {type(err).__name__}: {err}"
    parts = urlsplit(base_url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return f"W&B base URL {base_url!r} has no host"
    try:
        with socket.create_connection((host, port), timeout=probe_timeout):
            pass
    except OSError as err:
        return f"cannot reach {host}:{port} ({err.strerror or err}); no network?"
    return None


def _cell(value: Any) -> Any:
    # wandb.Table JSON-serialises cells; strict JSON has no Infinity (identical images give PSNR inf).
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def log_summary(
    summary: SweepSummary,
    figures: Mapping[str, Path],
    *,
    project: str,
    entity: str | None = None,
    name: str | None = None,
) -> dict[str, str]:
    """Log the table and figures as one W&B run; returns ``{"entity", "project", "id", "url"}``."""
    import wandb

    run = wandb.init(
        project=project,
        entity=entity,
        name=name or f"summary-{summary.root.name}",
        job_type="summarize",
        config={
            "sweep_dir": str(summary.root),
            "baseline": summary.baseline_selector,
            "latency": summary.latency,
        },
    )
    try:
        table = wandb.Table(
            columns=list(COLUMNS),
            data=[[_cell(row[c]) for c in COLUMNS] for row in summary.rows],
            allow_mixed_types=True,  # columns hold None where a number is not measured
        )
        run.log(
            {
                TABLE_KEY: table,
                PLOT_KEY: wandb.Image(str(figures[PLOT_KEY]), caption="speed vs fidelity"),
                GRID_KEY: wandb.Image(str(figures[GRID_KEY]), caption="baseline first, then each run"),
            }
        )
        info = {"entity": run.entity, "project": run.project, "id": run.id, "url": run.url or ""}
    finally:
        run.finish()
    return info


def build_report(
    summary: SweepSummary,
    *,
    entity: str,
    project: str,
    run_id: str,
    title: str | None = None,
):
    """A ``wandb_workspaces.reports.v2.Report`` for the sweep (see the module docstring); not saved."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def runset() -> Any:  # one per panel grid: a runset carries its own id
        # Metric("ID") is the run id (backend key run.name); And(...) because a bare list is deprecated in 0.4.
        only_run = expr.And(expr.Metric("ID") == run_id)
        return wr.Runset(entity=entity, project=project, name="summary run", filters=only_run)

    def media(key: str, title: str) -> Any:
        return wr.PanelGrid(
            runsets=[runset()],
            panels=[
                wr.MediaBrowser(title=title, media_keys=[key], num_columns=1, layout=wr.Layout(w=24, h=16))
            ],
        )

    table_text = markdown_table(summary)
    if summary.notes:
        table_text += "\n\nNotes:\n\n" + "\n".join(f"- {n}" for n in summary.notes)
    return wr.Report(
        entity=entity,
        project=project,
        title=(title or f"MoSs sweep: {summary.root.name}")[:128],  # wandb-workspaces caps titles at 128
        description=(
            f"Baseline `{summary.baseline_selector}`; speed-up = median paired {summary.latency}-latency ratio; "
            "fidelity = mean PSNR / SSIM / MS-SSIM against each image's baseline twin (same prompt and seed)."
        ),
        blocks=[
            wr.H1(text="Summary"),
            wr.MarkdownBlock(text=table_text),
            wr.H1(text="Speed vs fidelity"),
            media(PLOT_KEY, "speed vs fidelity"),
            wr.H1(text="Images"),
            media(GRID_KEY, "baseline first, then each run"),
            wr.H2(text="Table (interactive)"),
            wr.PanelGrid(
                runsets=[runset()],
                panels=[wr.WeavePanelSummaryTable(table_name=TABLE_KEY, layout=wr.Layout(w=24, h=12))],
            ),
        ],
    )


def publish_report(
    summary: SweepSummary,
    figures: Mapping[str, Path],
    *,
    project: str,
    entity: str | None = None,
    title: str | None = None,
) -> str:
    """Log the summary run, build the report over it, save it, and return its URL.

    Raises :class:`WandbUnavailableError` (with the one-line reason) when W&B cannot be used online.
    """
    reason = wandb_unavailable_reason()
    if reason is not None:
        raise WandbUnavailableError(reason)
    info = log_summary(summary, figures, project=project, entity=entity)
    report = build_report(
        summary, entity=info["entity"], project=info["project"], run_id=info["id"], title=title
    )
    report.save()
    return str(report.url)
