"""The main job end to end, as users run it: tools/run.py in a subprocess (W&B offline)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from moss_run.app import run
from moss_run.errors import UserError
from moss_run.prepare import prepare

from .conftest import ROOT, compose_config, run_cli, with_model


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def test_killed_run_resumes_without_losing_or_redoing_images(tmp_path):
    run_dir = tmp_path / "run"
    prompts = "[" + ",".join(f"prompt number {i}" for i in range(16)) + "]"
    args = [f"hydra.run.dir={run_dir}", "logger=none", f"data.prompts={prompts}", "measure.warmup=0"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run.py"), *with_model(args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    records = run_dir / "records"
    deadline = time.time() + 240
    while time.time() < deadline and (not records.is_dir() or len(list(records.glob("*.json"))) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, mid-run
    proc.wait()
    done_before = {p.stem: p.stat().st_mtime_ns for p in (run_dir / "images").glob("*.png")}
    assert 3 <= len(done_before) < 16, "the run should have been killed part-way"
    assert not (run_dir / "records.jsonl").exists()

    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    records_after = _records(run_dir)
    assert [r["id"] for r in records_after] == [f"{i:05d}" for i in range(16)]
    # finished images were not regenerated, and nothing half-written is left behind
    for stem, mtime in done_before.items():
        if (records / f"{stem}.json").exists():
            assert (run_dir / "images" / f"{stem}.png").stat().st_mtime_ns == mtime
    assert not list(run_dir.rglob(".*.tmp"))
    assert len(list((run_dir / "images").glob("*.png"))) == 16


def test_sweep_with_ddp_writes_one_folder_per_point(tmp_path):
    """CPU DDP with two processes inside a Hydra sweep (one DDP test: each start costs two interpreters)."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "moss=off,k2", f"hydra.sweep.dir={sweep}", "trainer=ddp", "trainer.accelerator=cpu",
         "trainer.devices=2", "logger=none", "data.prompts=[a,b,c]", "measure.flops=false"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = sorted(p.parent for p in sweep.rglob("records.jsonl"))
    assert len(run_dirs) == 2
    assert sorted({r["moss"] for d in run_dirs for r in _records(d)}) == ["k2", "off"]
    for d in run_dirs:  # both ranks generated, and every image was written exactly once
        records = _records(d)
        assert sorted(r["id"] for r in records) == ["00000", "00001", "00002"]
        assert {r["rank"] for r in records} == {0, 1}
        assert len(list((d / "images").glob("*.png"))) == 3
    assert len(list(sweep.rglob("images/*.png"))) == 6  # no rank re-ran the sweep into a folder of its own

    # ...and the sweep summarises into one table and an image grid
    summary = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "summarize.py"), str(sweep), "--no-wandb"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "| tiny-off-cssa | off | cssa | 3 |" in summary.stdout
    assert "| tiny-k2-cssa | k2 | cssa | 3 |" in summary.stdout
    assert Image.open(sweep / "grid.png").size[0] > 256 * 2
    assert (sweep / "speed_quality.png").is_file()


def test_missing_checkpoints_print_one_clear_paragraph(tmp_path):
    proc = run_cli(
        ["model=infinity", "moss=k5", "attn=cssa_triton", f"hydra.run.dir={tmp_path / 'run'}", "logger=none"],
        env={"MOSS_CHECKPOINTS": str(tmp_path / "ckpt")},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    for part in (
        "infinity_2b_reg.pth",
        "infinity_vae_d32reg.pth",
        "flan-t5-xl",
        str(tmp_path / "ckpt"),
        "MOSS_CHECKPOINTS",
    ):
        assert part in message


def test_resumed_complete_run_only_rebuilds_the_summary(tmp_path):
    cfg = compose_config(["logger=none", "data.prompts=[a,b]", "measure.warmup=0"], tmp_path)
    first = run(cfg, prepare(cfg))
    assert first["num_images"] == 2
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.png")}
    again = compose_config(["logger=none", "data.prompts=[a,b]", "measure.warmup=0"], tmp_path)
    second = run(again, prepare(again))
    assert second["num_images"] == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.png")} == mtimes


def test_malformed_prompt_file_is_a_user_error(tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    cfg = compose_config(["data=prompts_file", f"data.path={bad}", "logger=none"], tmp_path / "out")
    with pytest.raises(UserError, match=r"prompts.jsonl line 2: \"prompt\" must be a non-empty string"):
        prepare(cfg)


def test_flex_attention_and_bf16_blocks_run_on_the_cpu(tmp_path):
    # Both used to crash on CPU: flex under FLOP counting (FLOPs now come from a meta-device dry run with the
    # dense call of the same mode), bf16 blocks in a CPU LayerNorm (now computed in fp32, as CUDA autocast does).
    overrides = [
        "attn=cssa_flex",
        "model.dtype=bf16",
        "logger=none",
        "data.prompts=[a red fox]",
        "measure.warmup=0",
    ]
    cfg = compose_config(overrides, tmp_path)
    summary = run(cfg, prepare(cfg))
    (record,) = _records(tmp_path)
    assert summary["num_images"] == 1 and record["flops"] > 0 and record["fallbacks"] == []
    machine = summary[
        "machine"
    ]  # which CPU: images are reproducible on one machine, not across instruction sets
    assert (
        machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    )
    fp32 = compose_config(["logger=none", "data.prompts=[a red fox]", "measure.warmup=0"], tmp_path / "fp32")
    run(fp32, prepare(fp32))
    (ref,) = _records(tmp_path / "fp32")
    assert record["kv_cache_bytes"] * 2 == ref["kv_cache_bytes"]  # the cache is in the blocks' dtype
    assert record["flops"] == ref["flops"]  # the attention kernel does not change the count
