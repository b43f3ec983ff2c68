#!/usr/bin/env bash
# The GPU benchmark, as one prepared script for the device machine (under 8 minutes on an H200):
# Infinity-2B architecture with seeded random weights at 1024², batch 1, CFG 3, bf16 blocks, every method of
# conf/moss interleaved in one process per attention setting, each eager and (where a graph can hold it) with
# every pass replayed as a CUDA graph (`name@graphs`). Latency does not depend on weight values.
#
#   here:   bash tools/device/fetch_wheels.sh
#   device: bash tools/device/bench_gpu.sh        (carry .whl)
# Results: benchmarks/results/<device>-infinity_2b-<attn>-<date>.{json,md} (bench.out_dir=benchmarks/results: these
# are meant to be committed), and this run's files and log are also copied to $OUT.
#
# Which torch it measures: tools/device/env.sh (the locked environment where it can be built, else the machine's
# own torch; printed first).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
log=${OUT:+$OUT/bench_gpu.log}
exec > >(tee ${log:-/dev/null}) 2>&1

source tools/device/env.sh

status=0
started=$(mktemp)   # files newer than this are the ones this run wrote
run_bench() {  # attn, timeout, method list
  # the warm-up round compiles the Triton kernels and captures the graphs; 5 timed rounds give median and IQR
  timeout "$2" "${PY[@]}" tools/bench.py model=infinity_2b model.weights=random "bench.moss=$3" \
      attn="$1" generation.batch_size=1 bench.warmup=1 bench.repeats=5 bench.peak_flops=989e12 \
      bench.out_dir=benchmarks/results hydra.run.dir="/tmp/moss-bench-$1" || status=$?
}
# Every conf/moss method eagerly, then with graphs the ones a graph can hold (the peers keep state inside the
# passes and are refused). Each attention setting is one process; the budgets keep the whole under 8 minutes.
methods='off,k2,k3,k4,k5,skip1,skip2,fastvar,fastervar,cfgoff,k3+cfgoff,k2+fastvar'
graphed='off@graphs,k2@graphs,k3@graphs,k4@graphs,k5@graphs,skip1@graphs,skip2@graphs,cfgoff@graphs,k3+cfgoff@graphs'
run_bench cssa 230 "[$methods,$graphed]"
run_bench cssa_triton 220 "[$methods,$graphed]"
if [ -n "${OUT:-}" ]; then
  find benchmarks/results -maxdepth 1 -newer "$started" \( -name '*.json' -o -name '*.md' \) -exec cp {} "$OUT"/ \;
fi
rm -f "$started"
exit $status
