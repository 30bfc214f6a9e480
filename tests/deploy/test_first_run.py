"""The first run on a fresh machine says what it does, and does no more."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.conftest import REPO

RECORDER = '''#!/bin/sh
echo "$0 $*" >> "{log}"
case "$*" in *pip*) exit 1 ;; esac
exec {real} "$@"
'''


def _demo_help(tmp_path: Path, with_cli: bool) -> tuple[str, str]:
    """`bash scripts/demo.sh --help` with python3, pip and spacer-worker
    that log every call (and refuse pip); the CLI missing if asked."""
    bin_dir, log = tmp_path / 'bin', tmp_path / 'calls.log'
    bin_dir.mkdir(parents=True)
    for name, real in (('python3', sys.executable), ('pip', '/bin/false')):
        tool = bin_dir / name
        tool.write_text(RECORDER.format(log=log, real=real))
        tool.chmod(0o755)
    cli = bin_dir / 'spacer-worker'
    cli.write_text(RECORDER.format(
        log=log, real=f'{sys.executable} -m spacer_worker.cli')
        if with_cli else '#!/bin/sh\nexit 127\n')
    cli.chmod(0o755)
    env = {**os.environ, 'PATH': f'{bin_dir}:/usr/bin:/bin',
           'PYTHONPATH': str(REPO)}
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'demo.sh'),
                           '--help'], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = log.read_text() if log.exists() else ''
    return done.stdout + done.stderr, calls


def test_demo_help_prints_help_and_installs_nothing(tmp_path):
    for with_cli in (True, False):
        out, calls = _demo_help(tmp_path / str(with_cli), with_cli)
        assert 'pip' not in calls, f'--help ran pip: {calls}'
        assert 'installing' not in out
        for option in ('--out', '--images', '--points', '--epochs',
                       '--seed', '--mode'):
            assert option in out, (with_cli, option, out)


def test_the_scripts_help_names_the_clis_options():
    """The words demo.sh prints where the CLI is not installed yet."""
    from spacer_worker.cli import build_parser
    text = (REPO / 'scripts' / 'demo.sh').read_text()
    usage = text.split('usage()', 1)[1].split('\nEOF', 1)[0]
    ours = set(re.findall(r'--[a-z]+', usage))
    demo = build_parser()._subparsers._group_actions[0].choices['demo']
    theirs = {o for a in demo._actions for o in a.option_strings
              if o.startswith('--') and o != '--help'}
    assert ours == theirs


def test_without_python310_the_coralnet_environment_tests_skip_saying_how():
    """scripts/test.sh sets SPACER_SKIP_PYTHON310 where no Python 3.10 is
    found (Debian 12 ships none): the tests skip, even in CI, with it."""
    reason = 'no Python 3.10 here; install one (pyenv install 3.10.13)'
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-rs', '-p',
         'no:cacheprovider', 'tests/compat/test_python310_client.py'],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, 'CI': '1', 'SPACER_SKIP_PYTHON310': reason})
    assert done.returncode == 0, done.stdout[-2000:]
    assert 'skipped' in done.stdout and 'pyenv install 3.10.13' in done.stdout
