#!/usr/bin/env bash
# The README's Memory table: the occlusion scene (balls hidden for 16 frames, two chunks of 8, with a
# camera's noise), recipes trained at equal training compute (the same frames seen) unless the row
# says otherwise, each scored by `convlstm eval` on held-out occlusion videos: stateful streaming
# against a stateless sliding window of 8 frames, on the frames that need memory and on the others.
#
#   scripts/memory.sh OUT_DIR [STEPS] [ROWS…]      (default rows: stateless d1 d2b4 d4b2; also d4x4,
#                                                   stateless-hard d1-hard d2b4-hard d4b2-hard, and
#                                                   the curricula c14 c124, stateless-wide d1-wide,
#                                                   d1-h16 stateless-h16, and observation dropout
#                                                   d1-freeze d1-band-freeze d1-noise d1-band-noise
#                                                   d2b4-band-freeze d1-band-black d2b4-band-black,
#                                                   and the shipped MSE loss: stateless-mse d1-mse
#                                                   d2b4-mse d4b2-mse d4x4-mse, and stateless-mse-hard
#                                                   d1-mse-hard d2b4-mse-hard, and twice the
#                                                   learning rate: stateless-mse-lr6 d1-mse-lr6,
#                                                   another training seed: stateless-mse-s1 d1-mse-s1,
#                                                   the forget gate's bias 3: d1-mse-fb3, and
#                                                   cold starts: d1-mse-r12 d1-mse-r25
#                                                   d1-mse-r12-s1, with 16 frames of truncation:
#                                                   d2b4-mse-r12 d2b4-mse-r12-s1 d2b4-mse-r12-s2
#                                                   d2b4-mse-r25 d2b4-mse-r25-s1, and a third seed:
#                                                   stateless-mse-s2 d1-mse-r12-s2, and cold starts
#                                                   at every chunk of a step: d2b4-mse-r12c
#                                                   d2b4-mse-r12c-s1, and 8 frames on 4 lanes in
#                                                   twice the updates: d1b4-mse-r12 stateless-mse-b4
#                                                   d1b4-mse-r12-s1 stateless-mse-b4-s1
#                                                   d1b4-mse-r12-s2 stateless-mse-b4-s2)
#
# TRAIN_VIDEOS (default 24) sets how many training videos make-data writes (the same 8 test videos).
# SCENE=reveal makes the other memory scene instead (a bar sweeps over a still scene; what it
# uncovers was covered for 0.4-1.2 × 16 frames): `SCENE=reveal bash scripts/memory.sh reveal 1800
# stateless-mse d1-mse`.
#
# Every row sees STEPS × 64 frames (lanes × chunk × chunks per update) except d4x4, d4x4-mse and
# stateless-mse-x4 and d1-mse-x4 (4×: 4 × STEPS updates of 64 frames, the frames of d4x4-mse).
# The rows use the Charbonnier loss, as the earlier rows of this table did (the -mse rows: MSE, the
# shipped default), and no cold starts (train.state_reset 0; the -r12 and -r25 rows: 1/8 and 1/4);
# the -hard rows add the mean |error| of each frame's worst 1 % of pixels, weighted 0.1
# (train.hard_pixels, train.hard_weight). Every row runs 8 lanes (data.batch_size 8, the quickstart
# default when these rows were run; quickstart now has 4) unless it sets its own.
# Any row with -sN appended (d1-mse-r12-s2) is that row from training seed N (--seed N: model init
# and video order), in its own run directory.
set -euo pipefail
out="${1:-memory}"; steps="${2:-1800}"; shift $(( $# > 2 ? 2 : $# ))
rows=("${@:-stateless d1 d2b4 d4b2}")
mkdir -p "$out"
scene="${SCENE:-occlusion}"
[ -d "$out/train" ] || python -m convlstm_cli make-data "$out/train" --scene "$scene" --num "${TRAIN_VIDEOS:-24}" --frames 120 --hidden 16 --seed 0
[ -d "$out/test" ] || python -m convlstm_cli make-data "$out/test" --scene "$scene" --num 8 --frames 160 --hidden 16 --seed 1
run() {  # NAME [train flags]; a row NAME-sN is row NAME with --seed N (its model init and video order)
  local name="$1$suffix"; shift
  local start=$(date +%s)
  python -m convlstm_cli train "$out/train" --config quickstart --out "$out/$name" --max-steps "${MAX_STEPS:-$steps}" \
    --set train.eval_every=200 --set train.tensorboard=false \
    --set train.loss=charbonnier --set train.state_reset=0 --set data.batch_size=8 --set data.cache=true "$@" ${seed[@]+"${seed[@]}"} > "$out/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - start )) s"
  python -m convlstm_cli eval "$out/$name" "$out/test" --window 8 --json "$out/$name/eval.json"
}
for row in ${rows[*]}; do
  base="$row" suffix="" seed=()
  if [[ "$row" =~ ^(.+)(-s([0-9]+))$ ]]; then
    base="${BASH_REMATCH[1]}" suffix="${BASH_REMATCH[2]}" seed=(--seed "${BASH_REMATCH[3]}")
  fi
  case "$base" in
    stateless) run stateless --stateless ;;
    d1) run d1 ;;                                                               # 8 lanes × 8 frames
    d2b4) run d2b4 --set train.detach_every=2 --set data.batch_size=4 ;;        # 4 lanes × 16 frames
    d4b2) run d4b2 --set train.detach_every=4 --set data.batch_size=2 ;;        # 2 lanes × 32 frames
    d4x4) run d4x4 --set train.detach_every=4 ;;                                # 8 lanes × 32: 4× compute
    stateless-hard) run stateless-hard --stateless --set train.hard_pixels=0.01 ;;
    d1-hard) run d1-hard --set train.hard_pixels=0.01 ;;
    d2b4-hard) run d2b4-hard --set train.detach_every=2 --set data.batch_size=4 --set train.hard_pixels=0.01 ;;
    # curricula of truncation lengths on 8 lanes, the same frames: fewer, longer steps at the end
    c14) MAX_STEPS=$(( steps * 5 / 8 )) run c14 --set train.detach_schedule=4@$(( steps / 2 )) ;;   # half 1, half 4
    c124) MAX_STEPS=$(( steps * 7 / 12 )) run c124 --set train.detach_schedule=2@$(( steps / 3 )),4@$(( steps / 2 )) ;;
    # twice the channels per level (four times the state's compute), the same frames
    stateless-wide) run stateless-wide --stateless --set model.hidden_channels=32,64 ;;
    d1-wide) run d1-wide --set model.hidden_channels=32,64 ;;
    # forecast 16 frames after each chunk (quickstart: 3): the chunk's last state must hold a hidden ball
    d1-h16) run d1-h16 --set model.horizon=16 ;;
    stateless-h16) run stateless-h16 --stateless --set model.horizon=16 ;;
    # observation dropout: hide the rest of a step's input from a random frame on, in a share of lanes
    # (fill: the lane's last shown frame; the -noise rows fill with noise)
    d1-freeze) run d1-freeze --set train.blackout=0.25 ;;
    d1-band-freeze) run d1-band-freeze --set train.blackout=0.5 --set train.blackout_region=band ;;
    d2b4-band-freeze) run d2b4-band-freeze --set train.detach_every=2 --set data.batch_size=4 --set train.blackout=0.5 --set train.blackout_region=band ;;
    # fill: black (zero), an occluder the targets see behind: the state must carry position too
    d1-band-black) run d1-band-black --set train.blackout=0.5 --set train.blackout_region=band --set train.blackout_fill=black ;;
    d2b4-band-black) run d2b4-band-black --set train.detach_every=2 --set data.batch_size=4 --set train.blackout=0.5 --set train.blackout_region=band --set train.blackout_fill=black ;;
    d1-noise) run d1-noise --set train.blackout=0.25 --set train.blackout_fill=noise ;;
    d1-band-noise) run d1-band-noise --set train.blackout=0.5 --set train.blackout_region=band --set train.blackout_fill=noise ;;
    # the shipped default loss (MSE: PSNR's own measure) instead of Charbonnier
    stateless-mse) run stateless-mse --stateless --set train.loss=mse ;;
    d1-mse) run d1-mse --set train.loss=mse ;;
    d2b4-mse) run d2b4-mse --set train.detach_every=2 --set data.batch_size=4 --set train.loss=mse ;;
    d4b2-mse) run d4b2-mse --set train.detach_every=4 --set data.batch_size=2 --set train.loss=mse ;;
    # the hard-pixel term with MSE, weighted 0.005: its share of the loss as 0.1 had with Charbonnier
    # (whose loss ends ~23× MSE's on this data)
    stateless-mse-hard) run stateless-mse-hard --stateless --set train.loss=mse --set train.hard_pixels=0.01 --set train.hard_weight=0.005 ;;
    d1-mse-hard) run d1-mse-hard --set train.loss=mse --set train.hard_pixels=0.01 --set train.hard_weight=0.005 ;;
    d2b4-mse-hard) run d2b4-mse-hard --set train.detach_every=2 --set data.batch_size=4 --set train.loss=mse --set train.hard_pixels=0.01 --set train.hard_weight=0.005 ;;
    d4x4-mse) run d4x4-mse --set train.detach_every=4 --set train.loss=mse ;;                      # 4× compute
    stateless-mse-x4) MAX_STEPS=$(( steps * 4 )) run stateless-mse-x4 --stateless --set train.loss=mse ;;  # d4x4-mse's frames
    d1-mse-x4) MAX_STEPS=$(( steps * 4 )) run d1-mse-x4 --set train.loss=mse ;;                   # the same, stateful
    # twice the quickstart learning rate (0.006): does converging sooner leave room for the memory?
    stateless-mse-lr6) run stateless-mse-lr6 --stateless --set train.loss=mse --set train.lr=0.006 ;;
    d1-mse-lr6) run d1-mse-lr6 --set train.loss=mse --set train.lr=0.006 ;;
    # cold starts: a share of lanes starts each step from zero state mid-video (train.state_reset)
    d1-mse-r12) run d1-mse-r12 --set train.loss=mse --set train.state_reset=0.125 ;;
    d1-mse-r25) run d1-mse-r25 --set train.loss=mse --set train.state_reset=0.25 ;;
    # the same with 16 frames of truncation on 4 lanes (the same frames per update)
    d2b4-mse-r12) run d2b4-mse-r12 --set train.detach_every=2 --set data.batch_size=4 --set train.loss=mse --set train.state_reset=0.125 ;;
    d2b4-mse-r25) run d2b4-mse-r25 --set train.detach_every=2 --set data.batch_size=4 --set train.loss=mse --set train.state_reset=0.25 ;;
    # cold starts drawn at each chunk of a two-chunk step, not only at its first (train.state_reset_at)
    d2b4-mse-r12c) run d2b4-mse-r12c --set train.detach_every=2 --set data.batch_size=4 --set train.loss=mse --set train.state_reset=0.125 --set train.state_reset_at=chunk ;;
    # 8 frames on 4 lanes: 32 frames an update, so 2 × STEPS updates (the same frames)
    d1b4-mse-r12) MAX_STEPS=$(( steps * 2 )) run d1b4-mse-r12 --set data.batch_size=4 --set train.loss=mse --set train.state_reset=0.125 ;;
    stateless-mse-b4) MAX_STEPS=$(( steps * 2 )) run stateless-mse-b4 --stateless --set data.batch_size=4 --set train.loss=mse ;;
    # the forget gate's initial bias 3 (quickstart 1): sigmoid(3) = 0.95 holds a cell 16 frames at 0.44
    d1-mse-fb3) run d1-mse-fb3 --set train.loss=mse --set model.forget_bias=3 ;;
    d4b2-hard) run d4b2-hard --set train.detach_every=4 --set data.batch_size=2 --set train.hard_pixels=0.01 ;;
    # the state moves with what it holds (model.advect: (h, c) warped by a flow predicted from h)
    stateless-adv) run stateless-adv --stateless --set model.advect=true ;;
    d1-adv) run d1-adv --set model.advect=true ;;
    d2b4-adv) run d2b4-adv --set model.advect=true --set train.detach_every=2 --set data.batch_size=4 ;;
    d4b2-adv) run d4b2-adv --set model.advect=true --set train.detach_every=4 --set data.batch_size=2 ;;
    stateless-mse-hard-adv) run stateless-mse-hard-adv --stateless --set model.advect=true --set train.loss=mse --set train.hard_pixels=0.01 --set train.hard_weight=0.005 ;;
    d1-mse-hard-adv) run d1-mse-hard-adv --set model.advect=true --set train.loss=mse --set train.hard_pixels=0.01 --set train.hard_weight=0.005 ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
done
