#!/usr/bin/env bash
# Build the PySpacer 0.14.0 reference virtualenv that compatibility tests and
# benchmarks compare against. Its pins (torch 2.14.1 + torchvision) conflict
# with ours, so it lives apart, in ~/.cache/spacer_worker/pyspacer-0.14.0.
# About 5.7 GB; built once, reused afterwards.
set -euo pipefail
VENV="${SPACER_REFERENCE_VENV:-$HOME/.cache/spacer_worker/pyspacer-0.14.0}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import spacer.extractors, sklearn' 2>/dev/null; then
  echo "PySpacer reference venv ready: $VENV"
  exit 0
fi
echo "Building the PySpacer 0.14.0 reference venv in $VENV (several minutes)..."
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install -q scikit-learn==1.5.2 'numpy<2.4' scipy Pillow boto3
"$VENV/bin/pip" install -q --no-deps pyspacer==0.14.0
"$VENV/bin/python" -c 'import spacer.extractors, sklearn'
echo "PySpacer reference venv ready: $VENV"
