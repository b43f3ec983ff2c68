"""Session-wide set-up shared by every package's tests.

Without CUDA, Triton kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET`` is read when a ``@triton.jit``
function is defined, so it must be set before any test (of any package) imports a kernel module.

The suite runs on pytest-xdist workers (``-n 2`` in pyproject's addopts). Each worker gets an equal share of the
cores as its torch threads, and the commands it starts inherit that share through ``OMP_NUM_THREADS``: two workers
each running torch on every core spin OpenMP threads against each other, which on CI's 2 cores made the suite
slower (about 600 s) than with one thread a worker (about 420 s). Tests whose fixtures need a thread count set it
themselves (``two_threads`` in tests/models).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The files that take minutes (README commands, DDP, resumed runs, the 2B accounting table) start first, so the
# two workers end together instead of one of them running them alone at the end. Sorting is stable: the order
# within a file, and of every other file, is collection order.
_LONG_FILES = (
    "tools/test_readme.py",
    "tools/test_run.py",
    "tools/test_bench.py",
    "models/test_testbed_trained.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(_LONG_FILES) if path.endswith(name)), len(_LONG_FILES))

    items.sort(key=rank)
