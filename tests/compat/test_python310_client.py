"""The client in CoralNet's environment: Python 3.10, Django 4.2, redis-py
4.5.x, numpy 2.2, scikit-learn 1.5.2.

scripts/client-venv-py310.sh builds that venv (cached) with our client
extra; then the client-side tests run in it, against real workers on this
(3.11) Python.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.services import REPO

CLIENT_TESTS = [
    'tests/compat/test_client_environment.py',
    'tests/compat/test_coralnet_loop.py',
    'tests/client/test_client.py',
    'tests/client/test_coralnet_queue.py',
    'tests/client/test_collect_scale.py',
    'tests/client/test_hostile_records.py',
    'tests/client/test_django_project.py',
    'tests/messages/test_data_classes.py',
]


@pytest.fixture(scope='module')
def client_venv() -> str:
    if os.environ.get('SPACER_SKIP_PYTHON310'):
        # scripts/test.sh found no Python 3.10 and says how to get one.
        pytest.skip(os.environ['SPACER_SKIP_PYTHON310'])
    done = subprocess.run(['bash', str(REPO / 'scripts' /
                                       'client-venv-py310.sh')],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        message = f'Python 3.10 client venv not built:\n{done.stderr[-3000:]}'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(900)
def test_client_tests_pass_on_python310(client_venv):
    python = os.path.join(client_venv, 'bin', 'python')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'PYTEST_'))}
    env.update(PYTHONPATH=str(REPO), TEST_WORKER_PYTHON=sys.executable,
               PYTHONDONTWRITEBYTECODE='1')
    tests = [t for t in CLIENT_TESTS if (REPO / t).exists()]
    done = subprocess.run(
        [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *tests],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=880)
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    versions = subprocess.run(
        [python, '-c', 'import sys, django, redis, numpy, sklearn; '
         'print(sys.version_info[:2], django.__version__, redis.__version__,'
         ' numpy.__version__, sklearn.__version__)'],
        capture_output=True, text=True, check=True).stdout
    print(versions)
    assert versions.startswith('(3, 10) 4.2.') and ' 4.5.' in versions
