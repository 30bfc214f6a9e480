#!/usr/bin/env bash
# Build the Python 3.10 client virtualenv: CoralNet's web-process
# environment (Python 3.10, Django 4.2, redis-py 4.5.x, numpy 2.2,
# scikit-learn 1.5.2, PySpacer 0.13.0) plus spacer_worker's client extra,
# installed from this checkout after a dry run proves it moves no pin. tests/compat/test_python310_client.py runs the client tests in
# it against 3.11 workers. Cached in ~/.cache/spacer_worker/, keyed by the
# requirements, so it is built once per change of them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv-lib.sh

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

# CoralNet's pins that touch what our client installs or what its web
# process imports (coralnet/coralnet requirements/base.txt, release 1.31;
# its git-URL requirements cannot be fetched here and pin nothing we use).
CORALNET_PINS=("Django>=4.2.16,<5.0" "redis>=4.5.4,<4.6" "numpy==2.2.6"
               "Pillow==12.1.1" "boto3>=1.34.162,<1.35" "tqdm==4.66.5"
               "matplotlib==3.10.0" "huey>=2.4.5,<2.5" "scikit-learn==1.5.2")
# PySpacer 0.13.0, as CoralNet pins it, for its messages in the web process.
# Its torch/torchvision pins are left out (--no-deps): spacer.messages and
# spacer.data_classes import without them, and no CUDA build is fetched.
PYSPACER=pyspacer==0.13.0
TEST_REQS=("pytest>=8" "pytest-timeout>=2.3")
KEY=$( { printf '%s\n' "${CORALNET_PINS[@]}" "$PYSPACER" "${TEST_REQS[@]}"; \
         sed -n '/^client = \[/,/^\]/p' pyproject.toml; \
         grep '^requires-python' pyproject.toml; } | sha256sum | cut -c1-12)
VENV="${SPACER_CLIENT_VENV:-$HOME/.cache/spacer_worker/client-py310-$KEY}"
venv_reuse "$VENV"
venv_new "$PY" "$VENV" "the Python 3.10 CoralNet venv"
# 1. CoralNet's environment as it is today.
"$VENV/bin/pip" install -q "${CORALNET_PINS[@]}" "${TEST_REQS[@]}" >&2
"$VENV/bin/pip" install -q --no-deps "$PYSPACER" "scikit-learn==1.5.2" >&2
# 2. Our client extra goes in beside it without moving a pin: pip's
# dry-run report must upgrade or downgrade nothing already installed
# (tests/compat/test_coralnet_pyspacer_web.py reads the report too).
"$VENV/bin/pip" list --format=json > "$VENV/before-client.json" 2>/dev/null
"$VENV/bin/pip" install -q --dry-run --report "$VENV/client-install-report.json" \
  ".[client]" >&2
"$VENV/bin/python" - "$VENV" <<'PYEOF' >&2
import json, sys
venv = sys.argv[1]
before = {p['name'].lower().replace('_', '-'): p['version']
          for p in json.load(open(f'{venv}/before-client.json'))}
report = json.load(open(f'{venv}/client-install-report.json'))
moved = [f"{i['metadata']['name']} {before[n]} -> {i['metadata']['version']}"
         for i in report['install']
         if (n := i['metadata']['name'].lower().replace('_', '-')) in before
         and before[n] != i['metadata']['version']]
if moved:
    sys.exit('installing spacer_worker[client] would move CoralNet\'s '
             'packages: ' + ', '.join(moved))
print('spacer_worker[client] moves none of CoralNet\'s', len(before),
      'installed packages')
PYEOF
"$VENV/bin/pip" install -q ".[client]" >&2
venv_finish "$VENV"
