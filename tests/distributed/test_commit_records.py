"""Commit records as the worker reads them back: its own sealed record is
finished, one for another message, tag or secret is refused (the attacks
through a real worker are in test_untrusted_round_two.py)."""

from __future__ import annotations

import json

import pytest

from spacer_worker import config
from spacer_worker.worker.commit_records import (
    RecordRefused,
    open_record,
    seal,
    staged_key,
)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_FILESYSTEM_WRITE_ROOTS', str(tmp_path))
    monkeypatch.setenv('SPACER_WORKER_SECRET', 'only-workers-know')
    config.reload()
    yield tmp_path
    config.reload()


def _record(tmp_path) -> dict:
    key = str(tmp_path / 'out.fv')
    return {'key': 'celery-task-meta-t1', 'value': '{}', 'expires': 60,
            'staged': [{'type': 'filesystem', 'bucket': None, 'key': key,
                        'staged': staged_key(key, '0123456789abcdef'),
                        'sha256': None}]}


def test_a_workers_own_sealed_record_is_finished(roots):
    raw = json.dumps(seal(_record(roots), 'tag-1', 't1'))
    assert open_record(raw, 'tag-1', 't1', 'celery-task-meta-t1')['staged']


@pytest.mark.parametrize('tag, task_id, secret', [
    ('tag-2', 't1', 'only-workers-know'),      # another message's tag
    ('tag-1', 't2', 'only-workers-know'),      # another task
    ('tag-1', 't1', 'another-secret'),         # sealed under another secret
])
def test_a_record_for_another_message_or_secret_is_refused(
        roots, monkeypatch, tag, task_id, secret):
    raw = json.dumps(seal(_record(roots), 'tag-1', 't1'))
    monkeypatch.setenv('SPACER_WORKER_SECRET', secret)
    config.reload()
    with pytest.raises(RecordRefused):
        open_record(raw, tag, task_id, f'celery-task-meta-{task_id}')
