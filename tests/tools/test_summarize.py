"""tools/summarize.py and moss_eval.sweep / figures / wandb_report on a fake sweep with known numbers.

The fake sweep (32×32 PNGs, so MS-SSIM is not defined):

* ``tiny-off`` (baseline): prompts fox/car/tree, seeds 0/1/2, backbone latency 1.0 / 1.2 / 0.8 s;
* ``tiny-k2-cssa``: the same three, latency 0.5 / 0.4 / 0.4 s (ratios 2, 3, 2 → median 2), each image the
  baseline image + 10 / 5 / 20 grey levels (no clipping), so PSNR = 20·log10(255 / d) per image;
* ``tiny-k5-cssa`` (unfinished: ``records/*.json``): fox and car (ratios 4, 4) plus a prompt the baseline lacks
  (one image without a twin; the baseline's tree has none in this run).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from moss_eval.figures import grid_size, image_grid
from moss_eval.sweep import NoBaselineError, markdown_table, summarize_sweep
from moss_eval.wandb_report import GRID_KEY, PLOT_KEY, TABLE_KEY, build_report

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32
PROMPTS = {"a red fox": 0, "a blue car": 1, "a green tree": 2}


summarize_tool = load_script("tools/summarize.py", "summarize_tool")


def base_pixels(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(50, 201, (SIZE, SIZE, 3), generator=g, dtype=torch.uint8)


def record(run: str, moss: str, prompt: str, seed: int, index: int, backbone: float, **extra) -> dict:
    rec = {
        "id": f"{index:05d}",
        "index": index,
        "prompt": prompt,
        "seed": seed,
        "run_name": run,
        "model": "tiny",
        "moss": moss,
        "attn": "cssa",
        "dispatch": "variance",
        "image": f"images/{index:05d}.png",
        "resolution": SIZE,
        "aspect_ratio": 1.0,
        "batch_size": 1,
        "latency_s": {
            "text": 0.01,
            "draft": backbone / 2,
            "decode": 0.1,
            "backbone": backbone,
            "total": backbone + 0.1,
        },
        "tokens_processed": 100 if moss == "off" else 40,
        "tokens_per_pass": [1, 4],
        "forward_passes": 5 if moss == "off" else 3,
        "kv_cache_bytes": 2**30 if moss == "off" else 2**28,
        "peak_memory_bytes": None,
        "flops": None,
        "fallbacks": [],
    }
    rec.update(extra)
    return rec


def write_run(
    run_dir: Path, records: list[dict], images: list[torch.Tensor], *, jsonl: bool = True, **fields
) -> None:
    (run_dir / "images").mkdir(parents=True)
    for rec, pixels in zip(records, images, strict=True):
        rec.update(fields)
        Image.fromarray(pixels.numpy()).save(run_dir / rec["image"])
    if jsonl:
        (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        (run_dir / "records").mkdir()
        for rec in records:
            (run_dir / "records" / f"{rec['id']}.json").write_text(json.dumps(rec))


def make_sweep(root: Path, *, model: str = "tiny", with_baseline: bool = True, sub: str = "") -> Path:
    root = root / sub if sub else root
    if with_baseline:
        recs = [
            record("tiny-off", "off", p, s, s, b)
            for (p, s), b in zip(PROMPTS.items(), (1.0, 1.2, 0.8), strict=True)
        ]
        write_run(root / "moss=off", recs, [base_pixels(s) for s in PROMPTS.values()], model=model)
    recs = [
        record("tiny-k2-cssa", "k2", p, s, s, b)
        for (p, s), b in zip(PROMPTS.items(), (0.5, 0.4, 0.4), strict=True)
    ]
    write_run(
        root / "moss=k2",
        recs,
        [base_pixels(s) + d for s, d in zip(PROMPTS.values(), (10, 5, 20), strict=True)],
        model=model,
    )
    recs = [
        record("tiny-k5-cssa", "k5", "a red fox", 0, 0, 0.25),
        record("tiny-k5-cssa", "k5", "a blue car", 1, 1, 0.3),
        record("tiny-k5-cssa", "k5", "a purple cat", 3, 3, 0.2, fallbacks=["attn: flex -> sdpa"]),
    ]
    write_run(
        root / "moss=k5", recs, [base_pixels(0), base_pixels(1) + 1, base_pixels(3)], jsonl=False, model=model
    )
    return root


@pytest.fixture
def sweep(tmp_path) -> Path:
    return make_sweep(tmp_path / "sweep")


def expected_psnr(*levels: int) -> float:
    return sum(20 * math.log10(255 / d) for d in levels) / len(levels)


def test_summary_numbers(sweep):
    summary = summarize_sweep(sweep)
    assert [r["run"] for r in summary.rows] == ["tiny-off", "tiny-k2-cssa", "tiny-k5-cssa"]
    base, k2, k5 = summary.rows

    assert base["speedup"] == 1.0 and base["psnr"] is None  # the reference itself
    assert base["latency_s"] == pytest.approx(1.0) and base["kv_cache_gib"] == 1.0

    assert k2["baseline"] == "tiny-off" and k2["pairs"] == 3 and k2["no_twin"] == 0
    assert k2["speedup"] == pytest.approx(2.0)  # median of paired ratios 2, 3, 2 (not 1.0 / 0.4 = 2.5)
    assert (k2["speedup_min"], k2["speedup_max"]) == pytest.approx((2.0, 3.0))
    assert base["speedup_min"] is None and base["speedup_max"] is None  # the reference has no pair ratios
    assert k2["latency_s"] == pytest.approx(0.4)
    assert k2["kv_cache_gib"] == 0.25 and k2["tokens_processed"] == 40 and k2["forward_passes"] == 3
    assert k2["psnr"] == pytest.approx(expected_psnr(10, 5, 20), abs=1e-3)
    assert 0 < k2["ssim"] < 1 and k2["ms_ssim"] is None  # 32 px: below MS-SSIM's 176 px
    assert k2["speedup_total"] == pytest.approx(1.1 / 0.6)  # median of (1.1/0.6, 1.3/0.5, 0.9/0.5)

    # unfinished run: read from records/*.json; the purple cat has no twin, the baseline's tree has no match
    assert k5["pairs"] == 2 and k5["no_twin"] == 1 and k5["baseline_only"] == 1
    assert k5["speedup"] == pytest.approx(4.0)
    assert k5["psnr"] == math.inf  # the fox is identical to its twin, so the mean over pairs is inf
    assert k5["fidelity_pairs"] == 2
    assert k5["fallback_images"] == 1 and any(
        "used a fallback: attn: flex -> sdpa" in n for n in summary.notes
    )
    assert any("1 image(s) have no twin" in n and "00003" in n for n in summary.notes)
    assert any("no records.jsonl" in n and "records/*.json" in n for n in summary.notes)

    pairs = [p for p in summary.pairs if p["run"] == "tiny-k2-cssa"]
    assert [p["ratio"] for p in pairs] == pytest.approx([2.0, 3.0, 2.0])
    assert pairs[1]["psnr"] == pytest.approx(20 * math.log10(255 / 5), abs=1e-3)


def test_cli_writes_table_grid_and_plot(sweep, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert summarize_tool.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| tiny-k2-cssa | k2 | cssa | 3 |" in out and "| 2.00× [2.00–3.00], n=3 |" in out
    assert "| 4.00× [4.00–4.00], n=2 |" in out and "| 1.00× |" in out  # k5; the baseline, the reference
    assert "W&B logging skipped: WANDB_MODE=offline" in out

    table = json.loads((sweep / "summary_table.json").read_text())
    assert [r["run"] for r in table["rows"]] == ["tiny-off", "tiny-k2-cssa", "tiny-k5-cssa"]
    assert table["rows"][2]["psnr"] == "inf"  # strict JSON: no Infinity literal
    assert (table["rows"][1]["speedup_min"], table["rows"][1]["speedup_max"]) == pytest.approx((2.0, 3.0))
    csv_lines = (sweep / "summary_table.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("run,moss,attn")
    assert ",speedup,speedup_min,speedup_max,speedup_total," in csv_lines[0]
    assert len((sweep / "summary_pairs.csv").read_text().splitlines()) == 1 + 3 + 2
    md = (sweep / "summary_table.md").read_text()
    assert "no twin" in md and "Notes:" in md

    with Image.open(sweep / "grid.png") as grid:
        assert grid.size == grid_size(n_rows=3, n_cols=3)  # 3 baseline prompts × (baseline + 2 runs)
        # the k5 column has no green tree: a grey "no twin" cell (third row, third column)
        w, h = grid_size(0, 0)
        cell = (grid.size[0] - w) // 3
        assert grid.getpixel((w + 2 * cell + 3, h + 2 * cell + 3)) == (200, 200, 200)
    with Image.open(sweep / "speed_quality.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 600


def test_out_dir_and_grid_rows(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    assert summarize_tool.main([str(sweep), "--out", str(out), "--no-wandb", "--grid-rows", "2"]) == 0
    assert (out / "summary_table.md").is_file() and not (sweep / "summary_table.md").exists()
    with Image.open(out / "grid.png") as grid:
        assert grid.size == grid_size(n_rows=2, n_cols=3)


def test_grid_size_follows_cell_arguments(sweep):
    summary = summarize_sweep(sweep)
    path = image_grid(summary, sweep / "g.png", max_rows=1, cell=40, label_width=50, header=10)
    with Image.open(path) as grid:
        assert grid.size == (50 + 3 * 40, 10 + 1 * 40)


def test_no_baseline_is_a_clear_error(tmp_path, capsys):
    root = make_sweep(tmp_path / "sweep", with_baseline=False)
    with pytest.raises(NoBaselineError, match=r"no run matches moss=off .*tiny-k2-cssa \(moss=k2\)"):
        summarize_sweep(root)
    assert summarize_tool.main([str(root), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("summarize: error: no baseline") and "Traceback" not in err
    # naming another baseline works
    assert summarize_sweep(root, baseline="moss=k2").rows[0]["run"] == "tiny-k2-cssa"


def test_baselines_are_matched_per_model(tmp_path):
    root = tmp_path / "sweep"
    make_sweep(root, model="tiny", sub="tiny")
    make_sweep(root, model="small", sub="small")
    summary = summarize_sweep(root)
    assert len(summary.rows) == 6
    for row in summary.rows:
        base = summary.row(row["baseline"])
        assert base["model"] == row["model"] and base["moss"] == "off"
    # the same run names exist in both models: labels are told apart by directory
    assert {r["run"] for r in summary.rows if r["moss"] == "k2"} == {
        "tiny-k2-cssa (small/moss=k2)",
        "tiny-k2-cssa (tiny/moss=k2)",
    }


def test_bad_record_names_the_file(sweep, capsys):
    path = sweep / "moss=k2" / "records.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["latency_s"]
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    assert summarize_tool.main([str(sweep), "--no-wandb"]) == 1
    assert "records.jsonl:2: record lacks latency_s" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")  # inside wandb-workspaces 0.4.13
def test_report_is_built_offline(sweep):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    summary = summarize_sweep(sweep)
    report = build_report(summary, entity="me", project="moss", run_id="abc123", title="k sweep")
    assert isinstance(report, wr.Report)
    assert (report.title, report.entity, report.project) == ("k sweep", "me", "moss")
    assert [type(b).__name__ for b in report.blocks] == [
        "H1", "MarkdownBlock", "H1", "PanelGrid", "H1", "PanelGrid", "H2", "PanelGrid",
    ]  # fmt: skip
    markdown = report.blocks[1].text
    assert "| tiny-k2-cssa | k2 | cssa | 3 |" in markdown and "2.00×" in markdown and "no twin" in markdown
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    assert [p.media_keys for p in panels if isinstance(p, wr.MediaBrowser)] == [[PLOT_KEY], [GRID_KEY]]
    assert [p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)] == [TABLE_KEY]
    for grid in grids:  # every panel grid shows the summarize run only
        (runset,) = grid.runsets
        assert (runset.entity, runset.project) == ("me", "moss")
        only = expr.expr_to_filters(
            runset.filters
        )  # what the report sends: run id (backend "name") == abc123
        assert (only.key.section, only.key.name, only.op, only.value) == ("run", "name", "=", "abc123")


def test_wandb_report_without_api_key_fails_in_one_line(sweep, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home), NETRC=str(home / ".netrc"), WANDB_CONFIG_DIR=str(home), WANDB_DATA_DIR=str(home)
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "summarize.py"), str(sweep), "--wandb-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == summarize_tool.EXIT_REPORT_NOT_PUBLISHED
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "W&B" in ln]
    assert line.startswith("summarize: W&B report not published: no W&B API key")
    assert (sweep / "summary_table.md").is_file()  # the local outputs are still written


def test_log_summary_offline_run_holds_table_and_figures(sweep, tmp_path, monkeypatch):
    from moss_eval.figures import write_figures
    from moss_eval.wandb_report import log_summary

    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    summary = summarize_sweep(sweep)
    info = log_summary(summary, write_figures(summary, sweep), project="moss-test")
    (run_dir,) = (tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{info['id']}")
    media = run_dir / "files" / "media"
    (table_file,) = (media / "table").glob(f"{TABLE_KEY}_*.table.json")
    table = json.loads(table_file.read_text())
    runs = [row[table["columns"].index("run")] for row in table["data"]]
    assert runs == ["tiny-off", "tiny-k2-cssa", "tiny-k5-cssa"]
    assert table["data"][2][table["columns"].index("psnr")] == "inf"
    assert {p.name.split("_0_")[0] for p in (media / "images").glob("*.png")} == {PLOT_KEY, GRID_KEY}


def test_stale_jsonl_loses_to_record_files(sweep):
    # a resumed run: records.jsonl rebuilt when it stopped after two images, records/ has all three since
    run_dir = sweep / "moss=k2"
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    (run_dir / "records").mkdir()
    for line in lines:
        (run_dir / "records" / f"{json.loads(line)['id']}.json").write_text(line)
    (run_dir / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")
    summary = summarize_sweep(sweep)
    assert summary.row("tiny-k2-cssa")["images"] == 3
    assert any("does not match records/" in n for n in summary.notes)


def test_spread_beside_a_paired_speedup_the_latency_median_contradicts(tmp_path):
    # two images: ratios 3.71 and 0.53, so the paired median is 2.12× while the run's median latency is slower
    root = tmp_path / "sweep"
    prompts = list(PROMPTS.items())[:2]
    base = [record("tiny-off", "off", p, s, s, b) for (p, s), b in zip(prompts, (0.371, 1.0), strict=True)]
    run = [record("tiny-k2", "k2", p, s, s, b) for (p, s), b in zip(prompts, (0.1, 1 / 0.53), strict=True)]
    write_run(root / "off", base, [base_pixels(s) for _, s in prompts])
    write_run(root / "k2", run, [base_pixels(s) + 3 for _, s in prompts])
    summary = summarize_sweep(root)
    row, reference = summary.row("tiny-k2"), summary.row("tiny-off")
    assert row["latency_s"] > reference["latency_s"]  # 0.994 s against 0.686 s
    assert row["speedup"] == pytest.approx(2.12) and row["pairs"] == 2
    assert (row["speedup_min"], row["speedup_max"]) == pytest.approx((0.53, 3.71))
    assert "| 2.12× [0.53–3.71], n=2 |" in markdown_table(summary)
    (note,) = [n for n in summary.notes if n.startswith("tiny-k2:")]
    assert "median backbone latency (0.9934 s) is slower than tiny-off's (0.6855 s)" in note
    assert "paired speed-up is 2.12×: the 2 paired ratios range 0.53–3.71×" in note


def test_quality_scores_sit_next_to_speed(sweep):
    """Evaluated runs get their quality columns (the paper's Table 1 layout); runs without eval/ stay empty."""
    from moss_eval.quality.base import EvalResult

    EvalResult("geneval", {"overall": 0.705, "counting": 0.6}).write(sweep / "moss=k2")
    EvalResult("geneval", {"overall": 0.729}).write(sweep / "moss=off")
    EvalResult("fidelity", {"psnr_mean": 30.0, "lpips_mean": 0.12}).write(sweep / "moss=k2")
    summary = summarize_sweep(sweep)
    base, k2, k5 = summary.rows
    assert (base["geneval"], k2["geneval"], k5["geneval"]) == (0.729, 0.705, None)
    assert k2["lpips"] == 0.12 and base["lpips"] is None and k2["hps"] is None
    table = markdown_table(summary)
    header = table.splitlines()[0]
    assert "| GenEval | LPIPS |" in header and "HPSv2.1" not in header  # only the evaluators that ran
    assert "| 0.705 | 0.1200 |" in table and "| 0.729 | — |" in table
