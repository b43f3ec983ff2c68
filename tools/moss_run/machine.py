"""What machine a run or a benchmark ran on, recorded beside its numbers.

CPU floating point is reproducible on one machine (the same config and seed give the same image, under load too),
but not across CPUs: oneDNN and MKL pick their kernels by instruction set (AMX, AVX512-BF16, AVX2, ...), and
another summation order moves the sampled bits of a few images. The testbed's method table rerun on another
machine of the same kind (2026-12-04c against 04b) changed one method's Shapes-GenEval by one image in 250 and
moved PSNR against `moss=off` for about a third of the pairs. So each record says which CPU it ran on.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

import torch

# The instruction sets that decide which kernels oneDNN and MKL run (x86 /proc/cpuinfo flag names).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@cache
def cpu_model() -> tuple[str | None, tuple[str, ...]]:
    """The CPU's model name and which of :data:`ISA_FLAGS` it has (Linux; elsewhere the platform's name, no flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return platform.processor() or None, ()
    name, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name is None:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, tuple(f for f in ISA_FLAGS if f in flags)


def machine_info() -> dict[str, Any]:
    """torch, the CPU (model, instruction sets, CPUs, torch threads) and, where CUDA is up, the GPU."""
    name, isa = cpu_model()
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": name,
        "cpu_isa": list(isa),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info
