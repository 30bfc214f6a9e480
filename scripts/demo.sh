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
echo "== installing spacer_worker[worker] (no torch)"
python3 -m pip install -q -e '.[worker]'
echo "== spacer-worker demo $*"
exec spacer-worker demo "$@"
