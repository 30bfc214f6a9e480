#!/usr/bin/env bash
# Build the torch-free CPU worker virtualenv: spacer_worker's worker extra
# (numpy, ONNX Runtime, scikit-learn; no torch) and what its tests need.
# scripts/test.sh runs the demo, the extraction, storage and a real-worker
# test in it, so that a CPU host installing `spacer_worker[worker]` is
# known to work. Cached in ~/.cache/spacer_worker/, keyed by the
# requirements; prints the venv's path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv-lib.sh

REQS=("pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100" "moto[server]>=5"
      "requests>=2.31")
KEY=$( { printf '%s\n' "${REQS[@]}"; sed -n '/^worker = \[/,/^\]/p;/^client = \[/,/^\]/p' pyproject.toml; } \
       | sha256sum | cut -c1-12)
VENV="${SPACER_CPU_VENV:-$HOME/.cache/spacer_worker/cpu-worker-$KEY}"
venv_reuse "$VENV"
venv_new python3 "$VENV" "the torch-free CPU worker venv"
"$VENV/bin/pip" install -q ".[worker]" "${REQS[@]}" >&2
if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "torch was installed into the CPU venv: the worker extra must not pull it" >&2
  exit 1
fi
venv_finish "$VENV"
