"""Session-wide set-up shared by every package's tests.

Without CUDA, Triton kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET`` is read when a ``@triton.jit``
function is defined, so it must be set before any test (of any package) imports a kernel module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
