"""pyproject.toml's bounds match what the code relies on."""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement

from tests.deploy.conftest import REPO


def _extra(name: str) -> dict[str, Requirement]:
    data = tomllib.loads((REPO / 'pyproject.toml').read_text())
    reqs = [Requirement(r) for r in data['project']['optional-dependencies'][name]]
    return {r.name.lower(): r for r in reqs}


def test_worker_floors_are_what_the_code_needs():
    worker = _extra('worker')
    # task_retry_on_worker_lost (an OOM-killed task is not requeued forever).
    assert not worker['celery'].specifier.contains('5.6.9')
    assert worker['celery'].specifier.contains('5.7.0')
    # PySpacer 0.14's floor; earlier releases have decoder CVEs.
    assert not worker['pillow'].specifier.contains('12.1.0')
    assert worker['pillow'].specifier.contains('12.1.1')


def test_a_new_major_release_never_slips_into_a_worker():
    for name, req in {**_extra('worker'), **_extra('gpu')}.items():
        if name == 'spacer_worker':
            continue
        assert any(s.operator in ('<', '==') for s in req.specifier), (
            f'{name} has no upper bound: a new major release could change '
            f'the features or the pickles a worker writes')


def test_the_client_stays_on_coralnets_versions():
    client = _extra('client')
    assert str(client['celery'].specifier) == '<5.6,>=5.4'
    assert str(client['kombu'].specifier) == '<5.6,>=5.4'
    assert str(client['redis'].specifier) == '<5.3,>=4.5.4'
