#!/usr/bin/env bash
# A web process as CoralNet runs it today: PySpacer 0.13.0 imported for its
# messages and data classes, Django 4.2, redis-py 4.5.x, and our client
# extra. tests/compat/test_coralnet_pyspacer013.py runs its Django project
# with it against real workers.
#
# PySpacer 0.13's messages import spacer.extractors, which imports torch.
# torch and the rest of PySpacer's stack (numpy, scikit-learn, Pillow,
# boto3) come from the 0.14 reference venv (scripts/reference-venv.sh)
# through a .pth line, after this venv's own site-packages, so `spacer` here
# is 0.13.0 and no second 5 GB torch is installed. The install into
# CoralNet's own Python 3.10 pins is checked by scripts/client-venv-py310.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

REF=$(bash scripts/reference-venv.sh | tail -1 | sed 's/^PySpacer reference venv ready: //')
REQS=("Django>=4.2.16,<5.0" "redis>=4.5.4,<4.6")
KEY=$( { printf '%s\n' "${REQS[@]}" "$REF"; \
         sed -n '/^client = \[/,/^\]/p' pyproject.toml; } | sha256sum | cut -c1-12)
VENV="${SPACER_PYSPACER013_VENV:-$HOME/.cache/spacer_worker/pyspacer-0.13.0-$KEY}"
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ]; then
  echo "$VENV"
  exit 0
fi
echo "== building the PySpacer 0.13.0 web-process venv in $VENV" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "${REQS[@]}" ".[client]" >&2
"$VENV/bin/pip" uninstall -q -y spacer_worker >&2
"$VENV/bin/pip" install -q --no-deps pyspacer==0.13.0 >&2
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
REF_SITE=$("$REF/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$REF_SITE" > "$SITE/zz_pyspacer_stack.pth"
"$VENV/bin/python" -c '
import importlib.metadata as m, spacer.extractors, spacer.messages, torch
assert m.version("pyspacer") == "0.13.0", m.version("pyspacer")' >&2
touch "$VENV/.complete"
echo "$VENV"
