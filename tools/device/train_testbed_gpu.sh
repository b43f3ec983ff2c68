#!/usr/bin/env bash
# The testbed's GPU recipe (issue 16 allows a better testbed trained on a GPU, beside the CPU recipe of
# conf/train_testbed.yaml, which stays the documented one): one prepared script for the device machine, about 8
# minutes on an H200 (under the device tool's 10-minute command limit).
#
#   here:   bash tools/device/fetch_wheels.sh
#   device: bash tools/device/train_testbed_gpu.sh        (carry .whl)
#
# First run on 2026-12-04 (benchmarks/results/testbed/gpu-h200-2026-12-04), on random layouts: two recipes side by
# side, 400 s each, at 0.3-0.56 s per step of 256 with both running. Continuing the then-shipped weights over 182k
# new scenes left loss and score where they were; a 192-wide model from random weights was far from trained after
# 542 steps. Second (gpu-h200-2026-12-04b), on canonical layouts: 444 then 1000 steps continuing run 9 took
# Shapes-GenEval from 0.50 to 0.74 on 600 held-out prompts; that export is the shipped testbed (moss-models 0.9.0).
# A step is bound by its launches and small kernels, not by the scene workers (tools/device/profile_testbed_step.py;
# 0.19 s alone after moss-models 0.7.6, about 1350 scenes/s at any batch).
#
# 1. probe: 30 steps of the run's own settings on the GPU, timed (perf/step_s), to size the run to BUDGET_S;
# 2. train: tools/train_testbed.py stage=transformer on the GPU (bf16-mixed; the scenes rendered by data.workers
#    processes, one per spare core), steps = BUDGET_S / the probe's step time, with train.max_time as a backstop;
#    by default it continues the shipped weights (transformer.init_from=shipped) on scenes no CPU run has seen;
# 3. score: Shapes-GenEval of the export through tools/run.py at moss=off and k2 on the test's 100 held-out prompts
#    (prompt seed 0), and at moss=off on 250 prompts of prompt seed 1 (where the CPU runs were compared).
# Everything that comes back is under $OUT: the export (transformer.safetensors, text.safetensors, testbed.json;
# the VAE is the shipped one, unchanged), the loss curve (metrics.csv) and this log; with PACK=1 the first four
# in one file, testbed-gpu[-TAG].tar (the device tool returns at most 8 files). Back here, copy the export
# beside the shipped vae.safetensors, score it on CPU (tests/models/test_testbed_trained.py's prompts), search the
# presets and ship it as the CPU runs were shipped (model card, packages/moss-models/.../testbed/weights/README.md).
#
# Settings (environment): BUDGET_S training seconds (360); BATCH (256); LR (2e-3; batch 16 used 1e-3); WARMUP (200);
# DATA_SEED (8: the CPU runs used 0-7); INIT (shipped; "none": random weights); ARCH (a model.arch override for
# INIT=none, e.g. {embed_dim:192,num_heads:3}; the registry fixes depth 4 and the scale sides, and an export file
# must stay under 16 MiB to come back, so embed_dim at most 192); TAG (names this run's folders and files, so two
# runs can share one machine; the command then runs `bash tools/device/env.sh` first and gives each WORKERS); WORKERS
# (the scene-rendering processes: 6, or all cores but two on a smaller machine; on the H200 6 workers fed a batch
# of 256 in 0.054 s and 14 in 0.127 s); SCORE (1; 0: no scoring here, the export is scored on CPU);
# PACK (0; 1: see above); STEPS (a fixed number of steps: no sizing from the probe, which on 2026-12-04 measured
# 0.73-0.85 s/step where the run then took 0.34-0.36, its 30 steps being mostly warm-up; BUDGET_S still sets the
# backstop); EXTRA (more train_testbed.py overrides, split on spaces, e.g. data.relation_rate=0.8). Two recipes side
# by side on one H200, each with 6 workers:
#   bash tools/device/env.sh; TAG=a … bash tools/device/train_testbed_gpu.sh & TAG=b ARCH='{…}' … bash …; wait
# For a check of the script itself on a machine without a GPU: ACCELERATOR=cpu BUDGET_S=10 BATCH=4 N_TEST=5
# N_SEED1=5 (the scores then mean nothing).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-outputs/device-train}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: the copies below run from the run folder
TAG=${TAG:-}
name=testbed-gpu${TAG:+-$TAG}
exec > >(tee "$OUT/$name.log") 2>&1

source tools/device/env.sh

BUDGET_S=${BUDGET_S:-360} BATCH=${BATCH:-256} LR=${LR:-2e-3} WARMUP=${WARMUP:-200} DATA_SEED=${DATA_SEED:-8}
INIT=${INIT:-shipped} ARCH=${ARCH:-} ACCELERATOR=${ACCELERATOR:-gpu} N_TEST=${N_TEST:-100} N_SEED1=${N_SEED1:-250}
WORKERS=${WORKERS:-$(( $(nproc) > 8 ? 6 : ($(nproc) > 3 ? $(nproc) - 2 : 1) ))} SCORE=${SCORE:-1} PACK=${PACK:-0}
RUN=/tmp/$name PROBE=/tmp/$name-probe
rm -rf "$RUN" "$PROBE"
common=(stage=transformer "train.accelerator=$ACCELERATOR" transformer.precision=bf16-mixed "transformer.batch_size=$BATCH"
        "transformer.lr=$LR" "transformer.warmup=$WARMUP" "data.seed=$DATA_SEED" "data.workers=$WORKERS"
        train.progress_bar=false threads=2)
read -r -a extra <<< "${EXTRA:-}"
common+=("${extra[@]}")
if [ "$INIT" = none ]; then
  common+=(transformer.init_from=null)
  [ -n "$ARCH" ] && common+=("model.arch=$ARCH")
  for d in "$RUN" "$PROBE"; do  # a run from random weights trains on the shipped VAE's bits
    mkdir -p "$d" && cp packages/moss-models/src/moss_models/testbed/weights/vae.safetensors "$d/"
  done
else
  common+=("transformer.init_from=$INIT")
fi

steps=${STEPS:-}
if [ -n "$steps" ]; then
  echo "== $steps steps (STEPS), no probe"
else
  echo "== probe: 30 steps on $ACCELERATOR, batch $BATCH, $WORKERS data workers"
  timeout 100 "${PY[@]}" tools/train_testbed.py "${common[@]}" transformer.steps=30 train.log_every=5 \
      train.ckpt_every=1000 "out_dir=$PROBE" hydra.run.dir="$PROBE/hydra" || { echo "probe failed"; exit 1; }
  step_s=$("${PY[@]}" - "$PROBE/logs/transformer/csv/version_0/metrics.csv" <<'PY'
import csv, statistics, sys
rows = [float(r["perf/step_s"]) for r in csv.DictReader(open(sys.argv[1])) if r.get("perf/step_s")]
print(statistics.median(rows[len(rows) // 2:]))  # the later steps: the first ones include warm-up
PY
  )
  steps=$("${PY[@]}" -c "print(max(100, int($BUDGET_S / $step_s)))")
  echo "== probe: $step_s s/step -> $steps steps in ${BUDGET_S} s ($(( steps * BATCH )) scenes)"
fi

# backstops: the fit stops (and exports) 40 s past the budget; the whole command must end inside the device
# tool's 10 minutes, or nothing comes back
max_time=$("${PY[@]}" -c "s = $BUDGET_S + 40; print(f'00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}')")
timeout $(( BUDGET_S + 70 )) "${PY[@]}" tools/train_testbed.py "${common[@]}" "transformer.steps=$steps" \
    "data.length=$(( steps * BATCH + BATCH ))" "train.max_time=$max_time" train.log_every=50 train.ckpt_every=500 \
    "out_dir=$RUN" hydra.run.dir="$RUN/hydra"
status=$?
files=(transformer.safetensors text.safetensors testbed.json logs/transformer/csv/version_0/metrics.csv)
if [ "$PACK" = 1 ]; then
  tar -cf "$OUT/$name.tar" -C "$RUN" --ignore-failed-read "${files[@]}"
else
  (cd "$RUN" && cp "${files[@]}" "$OUT"/) 2>/dev/null
fi
[ $status -eq 0 ] || { echo "training exited with $status"; exit $status; }

[ "$SCORE" = 1 ] || exit 0
echo "== Shapes-GenEval of the export"
score() {  # prompt seed, prompts, method
  timeout 120 "${PY[@]}" tools/run.py model=testbed "model.checkpoints=$RUN" "trainer=$ACCELERATOR" data=shapes \
      "data.prompt_seed=$1" "data.limit=$2" data.samples_per_prompt=1 "moss=$3" 'eval=[shapes]' logger=none \
      generation.batch_size=50 hydra.run.dir="/tmp/$name-eval/$1-$2-$3" 2>&1 | grep -iE "shapes|overall" | tail -3
}
score 0 "$N_TEST" off; score 0 "$N_TEST" k2; score 1 "$N_SEED1" off
exit 0
