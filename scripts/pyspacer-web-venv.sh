#!/usr/bin/env bash
# A web process as CoralNet runs it: PySpacer (0.13.0 by default, as
# CoralNet pins it today; or 0.14.0) imported for its messages and data
# classes, Django 4.2, redis-py 4.5.x, and our client extra.
# tests/compat/test_coralnet_pyspacer_web.py runs its Django project with it
# against real workers. Usage: pyspacer-web-venv.sh [0.13.0|0.14.0]
#
# PySpacer's messages import spacer.extractors, which imports torch.
# torch and the rest of PySpacer's stack (numpy, scikit-learn, Pillow,
# boto3), and PySpacer 0.14.0 itself, come from the 0.14 reference venv
# (scripts/reference-venv.sh) through a .pth line, after this venv's own
# site-packages; for 0.13.0, pyspacer 0.13.0 is installed here and shadows
# it. No second 5 GB torch is installed. The install into
# CoralNet's own Python 3.10 pins is checked by scripts/client-venv-py310.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv-lib.sh

VERSION=${1:-0.13.0}
case "$VERSION" in 0.13.0|0.14.0) ;; *) echo "PySpacer 0.13.0 or 0.14.0, not $VERSION" >&2; exit 2;; esac
REF=$(bash scripts/reference-venv.sh | tail -1 | sed 's/^PySpacer reference venv ready: //')
REQS=("Django>=4.2.16,<5.0" "redis>=4.5.4,<4.6")
KEY=$( { printf '%s\n' "${REQS[@]}" "$REF" "$VERSION"; \
         sed -n '/^client = \[/,/^\]/p' pyproject.toml; } | sha256sum | cut -c1-12)
VENV="$HOME/.cache/spacer_worker/web-pyspacer-$VERSION-$KEY"
venv_reuse "$VENV"
venv_new python3 "$VENV" "the PySpacer $VERSION web-process venv"
"$VENV/bin/pip" install -q "${REQS[@]}" ".[client]" >&2
if [ "$VERSION" != 0.14.0 ]; then
  "$VENV/bin/pip" install -q --no-deps "pyspacer==$VERSION" >&2
fi
venv_borrow "$VENV" "$REF"
"$VENV/bin/python" -c '
import importlib.metadata as m, spacer.extractors, spacer.messages, torch
import sys
assert m.version("pyspacer") == sys.argv[1], m.version("pyspacer")' "$VERSION" >&2
venv_finish "$VENV"
