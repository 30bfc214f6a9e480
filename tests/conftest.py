from __future__ import annotations

import os

import pytest

from tests.reference import reference_python


@pytest.fixture(scope='session')
def pyspacer_reference():
    """Path of the PySpacer 0.14.0 python; in CI its absence is a failure."""
    python = reference_python()
    if python is None:
        if os.environ.get('CI'):
            pytest.fail('PySpacer reference venv missing in CI; '
                        'scripts/test.sh should have built it.')
        pytest.skip('PySpacer reference venv missing; run '
                    'scripts/reference-venv.sh')
    return python


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path_factory):
    """Tests never read a developer's secrets.json or SPACER_* variables."""
    for name in list(os.environ):
        if name.startswith('SPACER_') and name not in (
                'SPACER_REFERENCE_PYTHON',):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp('nosecrets') / 'secrets.json'
    monkeypatch.setenv('SPACER_SECRETS_PATH', str(empty))
    from spacer_worker import config
    config.reload()
    yield
    config.reload()
