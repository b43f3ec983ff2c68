#!/usr/bin/env bash
# The GPU benchmark, as one prepared script for the device machine (under 8 minutes on an H200):
# Infinity-2B architecture with seeded random weights at 1024², batch 1, CFG 3, bf16 blocks, interleaved in one
# process: with attn=cssa the baseline, k2…k5, skip1/skip2, the peers (fastvar, fastervar) and two combinations
# (k3+cfgoff, k2+fastvar); with attn=cssa_triton the baseline and k2…k5. Latency does not depend on weight values.
#
#   here:   bash tools/device/fetch_wheels.sh
#   device: bash tools/device/bench_gpu.sh        (carry .whl)
# Results: benchmarks/results/<device>-infinity_2b-<attn>-<date>.{json,md} (bench.out_dir=benchmarks/results: these
# are meant to be committed), and this run's files are also copied to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# The workspace packages run from source: nothing to build or resolve on a machine without an index.
export PYTHONPATH="packages/moss-dispatch/src:packages/moss-attention/src:packages/moss-models/src:packages/moss-eval/src:tools${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
python3 - <<'PY'
import hydra, omegaconf, torch, triton
print(f"torch {torch.__version__}, triton {triton.__version__}, hydra {hydra.__version__}, {torch.cuda.get_device_name(0)}")
PY
status=0
started=$(mktemp)   # files newer than this are the ones this run wrote
run_bench() {  # attn, timeout, method list
  timeout "$2" python3 tools/bench.py model=infinity_2b model.weights=random "bench.moss=$3" \
      attn="$1" generation.batch_size=1 bench.warmup=2 bench.repeats=7 bench.peak_flops=790e12 \
      bench.out_dir=benchmarks/results hydra.run.dir="/tmp/moss-bench-$1" || status=$?
}
run_bench cssa 270 '[off,k2,k3,k4,k5,skip1,skip2,fastvar,fastervar,k3+cfgoff,k2+fastvar]'
run_bench cssa_triton 180 '[off,k2,k3,k4,k5]'
if [ -n "${OUT:-}" ]; then
  find benchmarks/results -maxdepth 1 -newer "$started" \( -name '*.json' -o -name '*.md' \) -exec cp {} "$OUT"/ \;
fi
rm -f "$started"
exit $status
