#!/usr/bin/env bash
# The README's Memory table: the occlusion scene (balls hidden for 20 frames, longer than a chunk of
# 8), recipes trained at equal training compute (the same frames seen), each scored by `convlstm eval`
# on held-out occlusion videos: stateful streaming against a stateless sliding window of 8 frames,
# on the frames that need memory and on the others.
#
#   scripts/memory.sh OUT_DIR [STEPS]      (STEPS for detach_every 1; detach_every 3 runs STEPS / 3)
#
# The README's rows were trained with the Charbonnier loss (pinned here, whatever the default).
set -euo pipefail
out="${1:-memory}"; steps="${2:-1800}"
mkdir -p "$out"
[ -d "$out/train" ] || python -m convlstm_cli make-data "$out/train" --scene occlusion --num 24 --frames 120 --hidden 20 --seed 0
[ -d "$out/test" ] || python -m convlstm_cli make-data "$out/test" --scene occlusion --num 8 --frames 160 --hidden 20 --seed 1
run() {  # NAME STEPS [train flags]
  local name="$1" n="$2"; shift 2
  local start=$(date +%s)
  python -m convlstm_cli train "$out/train" --config quickstart --out "$out/$name" --max-steps "$n" \
    --set train.eval_every=200 --set train.tensorboard=false \
    --set train.loss=charbonnier --set data.cache=true "$@" > "$out/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - start )) s"
  python -m convlstm_cli eval "$out/$name" "$out/test" --window 8 --json "$out/$name/eval.json"
}
run stateless "$steps" --stateless
run stateful "$steps"
run stateful_detach3_fb2 $(( steps / 3 )) --set train.detach_every=3 --set model.forget_bias=2
run stateful_detach3_3x "$steps" --set train.detach_every=3   # three times the compute
