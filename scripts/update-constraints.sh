#!/usr/bin/env bash
# Rewrites docker/constraints.txt: every package the images install, at the
# version pip picks today within pyproject.toml's bounds. The images install
# from it (docker/Dockerfile), so hosts that build them a month apart run
# the same numpy, ONNX Runtime, scikit-learn and Pillow: the same features
# and the same classifier pickles. Run it to upgrade on purpose, then run
# the tests (bash scripts/test.sh) and commit the file.
#
#   bash scripts/update-constraints.sh            # Python 3.11, as the images
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The extras of both images (torch comes by its own pin, TORCH_VERSION).
"$venv/bin/python" -m pip install -q '.[worker,flower]'
{
    echo "# Versions the images install (docker/Dockerfile: pip --constraint)."
    echo "# Kept by scripts/update-constraints.sh; edit pyproject.toml's bounds,"
    echo "# not this file. $("$venv/bin/python" --version), $(uname -m)."
    "$venv/bin/python" -m pip freeze --exclude spacer_worker --exclude pip |
        LC_ALL=C sort -f
} >docker/constraints.txt
echo "docker/constraints.txt: $(grep -vc '^#' docker/constraints.txt) packages"
