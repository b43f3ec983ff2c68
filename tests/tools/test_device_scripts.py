"""tools/device/*.sh: the prepared scripts for a GPU machine. They run only where a GPU is lent (the device tool),
so here they are checked for what can be checked without one: that bash parses them, and that each script sources
the shared environment setup rather than a copy of it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[2] / "tools" / "device"
SCRIPTS = sorted(DEVICE.glob("*.sh"))


def test_the_device_scripts_are_found():
    assert {"bench_gpu.sh", "env.sh", "train_testbed_gpu.sh"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses_it(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["bench_gpu.sh", "train_testbed_gpu.sh"])
def test_gpu_scripts_share_the_environment_setup(name):
    text = (DEVICE / name).read_text()
    assert "source tools/device/env.sh" in text and "uv sync --locked --offline" not in text


def test_the_step_profiler_runs_on_cpu():
    """tools/device/profile_testbed_step.py, in the CPU mode its docstring gives (tiny batch, no workers): it builds
    the training step as tools/moss_run/train.py does and reports the loader, the step and the profile."""
    root = DEVICE.parents[1]
    result = subprocess.run(
        [sys.executable, str(DEVICE / "profile_testbed_step.py"), "--device", "cpu", "--batch", "2", "--more-batches", "1",
         "--steps", "1", "--workers", "0"],
        capture_output=True, text=True, cwd=root, timeout=300,
        env={**os.environ, "PYTHONPATH": str(root / "tools")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loader: 0 workers, batch 2:" in result.stdout
    assert "step alone (batch 2, fixed batch on cpu)" in result.stdout
    assert "step alone (batch 1, fixed batch on cpu)" in result.stdout
    assert "Self CPU time total" in result.stdout
