# shellcheck shell=bash
# Sourced by the scripts that build cached test virtualenvs
# (client-venv-py310.sh, cpu-venv.sh, pyspacer-web-venv.sh): each keys its
# venv by what it installs, builds it once, and prints its path last.

# venv_reuse DIR: print DIR and end the script when a finished venv is there.
venv_reuse() {
  if [ -x "$1/bin/python" ] && [ -f "$1/.complete" ]; then
    echo "$1"
    exit 0
  fi
}

# venv_new PYTHON DIR WHAT: a fresh venv at DIR with a current pip.
venv_new() {
  echo "== building $3 in $2" >&2
  rm -rf "$2"
  "$1" -m venv "$2"
  "$2/bin/pip" install -q --upgrade pip >&2
}

# venv_borrow DIR FROM: FROM's site-packages on DIR's path, after DIR's own
# (a .pth line), so a second multi-GB torch is never installed.
venv_borrow() {
  local site from
  site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  from=$("$2/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$from" > "$site/zz_pyspacer_stack.pth"
}

# venv_finish DIR: drop the installed copy of spacer_worker (tests import
# the checkout through PYTHONPATH), mark the venv finished, print DIR.
venv_finish() {
  "$1/bin/pip" uninstall -q -y spacer_worker >&2
  touch "$1/.complete"
  echo "$1"
}
