#!/usr/bin/env bash
# The README's Quality figures: real-like footage (make-data --scene pans), the quickstart config,
# trained on the first 75 % of every clip (data.val_split tail), best.pt scored on the last 25 %
# against copy-last with `convlstm eval`.
#
#   scripts/quality.sh OUT_DIR [dev|held-out] [MAX_STEPS] [--set key=value ...]
#
# held-out uses photographs that no decision in this project was made on. Needs scikit-image
# (pip install -e ".[scenes]"). Prints the training time and the eval table; OUT_DIR keeps
# clips/, run/ (with curves.png) and eval.json. The default budget, 3,200 updates of quickstart's 4
# lanes, sees the frames of the README's earlier 1,600-step rows, which ran 8 lanes: to rerun those,
# pass 1600 --set data.batch_size=8.
set -euo pipefail
out="${1:-quality}"
photos="${2:-held-out}"
steps="${3:-3200}"
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
flag=""
[ "$photos" = "held-out" ] && flag="--held-out"
[ -d "$out/clips" ] || python -m convlstm_cli make-data "$out/clips" --scene pans --num 3 $flag
start=$(date +%s)
python -m convlstm_cli train "$out/clips" --config quickstart --out "$out/run" --max-steps "$steps" \
  --set data.val_split=tail --set train.tensorboard=false "$@"
echo "training took $(( $(date +%s) - start )) s on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python -m convlstm_cli eval "$out/run" "$out/clips" --tail 0.25 --modes stateful,copy-last --json "$out/eval.json"
