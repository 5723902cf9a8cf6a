#!/usr/bin/env bash
# End-to-end check of the CUDA paths on a GPU machine: make data, train with the gpu sample config
# (bf16, channels_last, torch.compile, pinned batches) for a few steps, stop and resume, predict, and a
# quick bench. Every command must exit 0; the logs land in OUT_DIR (default cuda-smoke/).
#
#   scripts/cuda_smoke.sh [OUT_DIR]
set -euo pipefail

out="${1:-cuda-smoke}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cl="python -m convlstm_cli"

step() { echo "== $*"; }

step "make-data"
$cl make-data "$work/videos" --num 12 --frames 96 --size 128

step "train 30 steps (gpu config: bf16, channels_last, compile)"
$cl train "$work/videos" --config gpu --device cuda --out "$work/run" --max-steps 30 --log-every 10 \
  --set data.batch_size=8 --set train.eval_every=20 --set train.save_every=20 --set train.warmup_steps=5 \
  2>&1 | tee "$out/train.log"

step "resume to 40 steps, eager"
$cl train "$work/videos" --device cuda --resume "$work/run" --max-steps 40 --log-every 5 --set train.compile=false 2>&1 | tee "$out/resume.log"

step "predict (streaming, then forecast mode)"
clip="$(ls "$work"/videos/*.mp4 | head -1)"
$cl predict "$clip" --checkpoint "$work/run" --device cuda --out "$work/pred" 2>&1 | tee "$out/predict.log"
$cl predict "$clip" --checkpoint "$work/run" --device cuda --context 20 --out "$work/pred-forecast" \
  2>&1 | tee -a "$out/predict.log"
cp "$work/pred/metrics.json" "$out/predict-metrics.json"

if [ "${SMOKE_BENCH:-1}" = 1 ]; then
  step "bench --quick"
  $cl bench --device cuda --quick --json "$out/bench-quick.json" 2>&1 | tee "$out/bench-quick.txt"
fi
echo "cuda smoke: all steps passed"
