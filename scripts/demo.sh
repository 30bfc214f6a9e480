#!/usr/bin/env bash
# The main job on a fresh machine: install spacer_worker with its worker
# extra (no torch: CPU extraction runs in ONNX Runtime), then run the whole
# pipeline through the queues with `spacer-worker demo`. With SPACER_BROKER_URL set it uses
# that broker and your running workers (start them with
# SPACER_FILESYSTEM_WRITE_ROOTS set to the demo folder, spacer-demo/ by
# default: workers refuse paths outside their roots); otherwise an embedded
# default, whose in-process worker may write only that folder.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: bash scripts/demo.sh [--out DIR] [--images N] [--points N]
                            [--epochs N] [--seed N]
                            [--mode {auto,embedded,broker}]

Installs spacer_worker[worker] (no torch) with pip, then runs
`spacer-worker demo`: generates images and EfficientNet-b0 weights, extracts
features, trains an MLP and classifies held-out images through the queues.

  --out DIR      output folder (default: ./spacer-demo)
  --images N     images to generate (default 10)
  --points N     annotated points per image (default 40)
  --epochs N     training epochs (default 50)
  --seed N       random seed (default 0)
  --mode MODE    'broker': SPACER_BROKER_URL and running workers;
                 'embedded': in-process broker and workers; 'auto' (default):
                 broker when SPACER_BROKER_URL is set
EOF
}

# Help installs nothing: the installed CLI's own, or the same words here.
for arg in "$@"; do
    case "$arg" in
    -h | --help)
        if ! spacer-worker demo --help 2>/dev/null; then usage; fi
        exit 0
        ;;
    esac
done

echo "== installing spacer_worker[worker] (no torch)"
python3 -m pip install -q -e '.[worker]'
echo "== spacer-worker demo $*"
exec spacer-worker demo "$@"
