#!/usr/bin/env bash
# Retrain the board's checkpoints with one recipe version (issue 17): seeds 0-4 of the four
# configurations at 1x, then the BatchTopK r=0 / r=24 pair at 4x with seeds 0-2. Each run resumes
# where it stopped, and a finished run is skipped, so rerunning this script continues the queue.
#     bash scripts/retrain_board.sh 2 runs/v2
# SEEDS and X4_SEEDS choose the seeds (defaults "1 3 4 0 2" and "0 1 2"; X4_SEEDS= skips the 4x runs).
# Seed 0 at 1x is the bundled baseline: copy runs/v2/<cfg>_s0/sae/* into baselines/<cfg>/.
set -euo pipefail
version=${1:-2}
out=${2:-runs/v$version}
cd "$(dirname "$0")/.."
# The board was trained on the data folder's Wikipedia sample; without it "wikipedia" is the small
# embedded sample, another dataset (the trainer records which one and will not resume across them).
if [ -z "${SAEBENCH_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export SAEBENCH_DATA_DIR=$(cd ../shared/data && pwd); fi
[ -n "${SAEBENCH_DATA_DIR:-}" ] || echo "warning: SAEBENCH_DATA_DIR is not set: training on the embedded Wikipedia sample, not the board's data" >&2
[ -x .venv/bin/saebench-scaffold ] && PATH="$PWD/.venv/bin:$PATH"
train() {  # cfg seed name [extra --set ...]
  local cfg=$1 seed=$2 name=$3; shift 3
  saebench-scaffold train "baselines/$cfg/recipe.yaml" --set recipe_version="$version" --set seed="$seed" \
      "$@" -o "$out/$name" --no-progress
}
for cfg in batchtopk_r24 matryoshka_r24 batchtopk_r0 matryoshka_r0; do
  for seed in ${SEEDS-1 3 4 0 2}; do train $cfg $seed ${cfg}_s$seed; done
done
for seed in ${X4_SEEDS-0 1 2}; do
  for cfg in batchtopk_r24 batchtopk_r0; do
    train $cfg $seed ${cfg}_x4_s$seed --set total_tokens=8323072
  done
done
