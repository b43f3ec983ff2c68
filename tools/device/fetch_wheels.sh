#!/usr/bin/env bash
# Fill .whl/ with the wheels tools/bench.py needs that the GPU machine lacks (it has torch, triton, lightning,
# torchmetrics, transformers, safetensors, pillow, numpy; it cannot reach a package index). Run here, then call the
# device tool with carry=[".whl"]. Versions follow uv.lock.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
# antlr4-python3-runtime 4.9.3 ships only as an sdist; its wheel is pure Python, so build it here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -la .whl
