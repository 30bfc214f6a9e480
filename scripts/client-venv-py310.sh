#!/usr/bin/env bash
# Build the Python 3.10 client virtualenv: CoralNet's web-process
# environment (Python 3.10, Django 4.2, redis-py 4.5.x, numpy 2.2,
# scikit-learn 1.5.2) plus spacer_worker's client extra, installed from this
# checkout. tests/compat/test_python310_client.py runs the client tests in
# it against 3.11 workers. Cached in ~/.cache/spacer_worker/, keyed by the
# requirements, so it is built once per change of them.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  if [ -n "${SPACER_PYTHON310:-}" ]; then echo "$SPACER_PYTHON310"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    for p in "$root"/versions/3.10.*/bin/python; do
      [ -x "$p" ] && { echo "$p"; return; }
    done
  fi
  command -v python3.10 2>/dev/null || true
}

PY=$(find_python310)
if [ -z "$PY" ]; then
  echo "== installing python3.10 (CoralNet's Python) with apt"
  apt-get update -qq && apt-get install -y -qq python3.10 python3.10-venv >/dev/null \
    || { echo "Python 3.10 unavailable: set SPACER_PYTHON310 to a 3.10 interpreter" >&2; exit 1; }
  PY=$(command -v python3.10)
fi

REQS=("django>=4.2,<4.3" "redis>=4.5.4,<4.6" "numpy>=2.2,<2.3"
      "scikit-learn==1.5.2" "Pillow" "pytest>=8" "pytest-timeout>=2.3")
KEY=$( { printf '%s\n' "${REQS[@]}"; sed -n '/^client = \[/,/^\]/p' pyproject.toml; \
         grep '^requires-python' pyproject.toml; } | sha256sum | cut -c1-12)
VENV="${SPACER_CLIENT_VENV:-$HOME/.cache/spacer_worker/client-py310-$KEY}"
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ]; then
  echo "$VENV"
  exit 0
fi
echo "== building the Python 3.10 client venv in $VENV" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >&2
# The client extra from this checkout beside CoralNet's pins: pip must find
# them compatible (requires-python, the redis bound).
"$VENV/bin/pip" install -q ".[client]" "${REQS[@]}" >&2
# Tests import the checkout (PYTHONPATH), not this copy.
"$VENV/bin/pip" uninstall -q -y spacer_worker >&2
touch "$VENV/.complete"
echo "$VENV"
