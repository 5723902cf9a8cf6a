#!/usr/bin/env bash
# Run `convlstm bench` on a CUDA GPU, keep the report, and check the GPU targets.
#
#   scripts/bench_cuda.sh [OUT_DIR] [extra bench flags, e.g. --no-compile]
#
# Writes OUT_DIR (default bench-cuda/): bench.json (the full report), bench.txt (the tables),
# gpu.csv (nvidia-smi facts). Targets checked (issue "convlstm bench"), for the openstl-s model:
# training >= 10x the naive fp32 reference, inference >= 2,000 sequences/s; and for streaming:
# flatness <= 1.1, speed-up over a W-frame sliding window >= 0.8 W. A missed target is reported,
# not hidden; the exit code is 0 whenever the bench itself ran.
set -euo pipefail

out="${1:-bench-cuda}"
[ $# -gt 0 ] && shift
mkdir -p "$out"

python - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("error: no CUDA device visible to torch (torch %s, CUDA build %s)" % (torch.__version__, torch.version.cuda))
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY

if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv > "$out/gpu.csv" || true
fi

python -m convlstm_cli bench --device cuda --json "$out/bench.json" "$@" | tee "$out/bench.txt"

python - "$out/bench.json" <<'PY'
import json
import sys

r = json.load(open(sys.argv[1]))
t, i, s = r["train"], r["inference"], r["stream"]
w = s["window"]
checks = [
    ("training speed-up over naive fp32 (openstl-s)", t["speedup_vs_naive"], ">=", 10.0),
    ("inference sequences/s (openstl-s)", i["sequences_per_s"], ">=", 2000.0),
    ("stream flatness (1000 vs 100 frames)", s["flatness"], "<=", 1.1),
    (f"stream speed-up over a W={w} window ({s['model']} model, {s['path']})", s["speedup_vs_window"], ">=", 0.8 * w),
]
for name, m in s.get("models", {}).items():
    checks.append((f"stream speed-up over a W={w} window ({name} model, {m['path']})", m["speedup_vs_window"], ">=", 0.8 * w))
print(f"\nMFU {t['mfu']:.2f} of the {t['mfu_peak']} dense peak (best rung: {t['best_rung']}; "
      f"at most {t['speedup_ceiling']:.1f}x naive at that peak)")
for name, value, op, target in checks:
    ok = value is not None and (value >= target if op == ">=" else value <= target)
    shown = "n/a" if value is None else f"{value:.2f}"
    print(f"{'met   ' if ok else 'MISSED'} {name}: {shown} (target {op} {target:g})")
PY
