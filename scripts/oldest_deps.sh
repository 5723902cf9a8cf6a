#!/usr/bin/env bash
# The test suite under the oldest releases pyproject.toml admits: a fresh venv, a regular (non-editable)
# install of this checkout with every dependency pinned to its lower bound, then `python -m pytest -q`.
# The bounds in pyproject.toml are only honest while this passes (pip downloads about 3 GB for torch).
#
#   bash scripts/oldest_deps.sh [VENV_DIR]        (default: /tmp/convlstm-oldest)
#
# TORCH=2.11.0 runs it under torch 2.11 instead of the oldest torch. torchvision is not a dependency
# (nothing imports it); it is not installed here, so the suite also shows nothing needs it.
# PYTHON=python3.13 NEWEST=1 runs it under another Python with today's releases instead of the pins
# (Python 3.12+ gets PyAV 19, whose wheels a Python 3.11 install never sees).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/convlstm-oldest}"
"${PYTHON:-python}" -m venv --clear "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
pins=("torch==${TORCH:-2.5.1}" "av==17.0.0" "typer==0.16.0" "rich==13.0.0"
      "numpy==1.24.4" "pyyaml==6.0" "pillow==10.1.0")
[ -n "${NEWEST:-}" ] && pins=()
printf '%s\n' "${pins[@]}" > "$venv/oldest.txt"
[ ${#pins[@]} -eq 0 ] || python -m pip install -q "${pins[@]}"
python -m pip install -q ".[test,export]" -c "$venv/oldest.txt"
python -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|av|typer|click|rich|numpy|pyyaml|pillow|onnx|onnxruntime) '
python -m pytest -q -p no:cacheprovider
