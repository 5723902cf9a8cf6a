#!/usr/bin/env bash
# The "before" column of the README's Quality table: the code as it was before the quality work
# (commit 22527e2), trained on the same footage the same way: heads (first 75 % of each clip) for
# training, tails for its validation, then its best.pt scored by today's `convlstm eval` on the tails.
#
#   scripts/quality_before.sh CLIPS_DIR OUT_DIR [MAX_STEPS]
set -euo pipefail
clips="$1"; out="$2"; steps="${3:-1500}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
[ -d "$out/before" ] || git -C "$root" worktree add -f "$out/before" 22527e2 > /dev/null
python "$root/scripts/split_tails.py" "$clips" "$out" 0.25
(cd "$out" && PYTHONPATH="$out/before" CONVLSTM_CACHE_DIR=off python -m convlstm_cli train "$out/heads" \
  --config quickstart --val-dir "$out/tails" --max-steps "$steps" --out "$out/run" --set train.tensorboard=false)
python -m convlstm_cli eval "$out/run" "$clips" --tail 0.25 --modes stateful,copy-last --json "$out/eval.json"
