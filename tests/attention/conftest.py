"""Shared set-up for moss-attention tests.

Without CUDA the Triton kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET`` is read when a
``@triton.jit`` function is defined, so it is set here, before any test module imports
``moss_attention.ops``; the chosen mode is printed in the report header and the terminal summary.
"""

import importlib.util
import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# The interpreter is written with numpy; without it the kernels cannot run on CPU at all.
TRITON_SKIP_REASON = (
    "Triton's CPU interpreter needs numpy, which is not installed"
    if INTERPRETED and importlib.util.find_spec("numpy") is None
    else None
)
TRITON_MODE = (
    f"skipped: {TRITON_SKIP_REASON}"
    if TRITON_SKIP_REASON
    else ("interpreted on CPU (TRITON_INTERPRET=1)" if INTERPRETED else "native on CUDA")
)
DEVICE = torch.device("cuda" if CUDA else "cpu")


def pytest_report_header(config):
    return f"moss-attention: Triton kernels {TRITON_MODE}; device {DEVICE}"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"moss-attention: Triton kernels ran {TRITON_MODE}; device {DEVICE}")


@pytest.fixture
def rope_ops():
    """The Triton RoPE module, or a skip that says why it cannot run."""
    if TRITON_SKIP_REASON:
        pytest.skip(TRITON_SKIP_REASON)
    from moss_attention.ops import rope_2d

    return rope_2d


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_packed_positions(grids, num_tokens, batch, *, device=DEVICE, generator=None):
    """Random mixed-scale token set: ``scale_ids (N,)`` in random order, per-image ``rows, cols (B, N)``."""
    scale_ids = torch.randint(0, len(grids), (num_tokens,), generator=generator)
    heights = torch.tensor([h for h, _ in grids])[scale_ids]
    widths = torch.tensor([w for _, w in grids])[scale_ids]
    rows = (torch.rand(batch, num_tokens, generator=generator) * heights).long()
    cols = (torch.rand(batch, num_tokens, generator=generator) * widths).long()
    return scale_ids.to(device), rows.to(device), cols.to(device)


@pytest.fixture
def packed_positions():
    return random_packed_positions
