"""LOG_DESTINATION, LOG_LEVEL and LOG_FORMAT work as in PySpacer, and JSON
lines carry the task's context."""

from __future__ import annotations

import json
import logging

import pytest

from spacer_worker.config import logs
from spacer_worker.exceptions import ConfigError
from tests.builders import extract_msg
from tests.services import wait_for


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_unset_destination_leaves_logging_alone(restore_root_logging):
    assert logs.configure_logging() is None


def test_file_destination_in_pyspacers_layout_at_the_level(
        tmp_path, monkeypatch, restore_root_logging):
    path = tmp_path / 'spacer.log'
    monkeypatch.setenv('SPACER_LOG_DESTINATION', str(path))
    monkeypatch.setenv('SPACER_LOG_LEVEL', 'WARNING')
    logs.configure_logging()
    logging.getLogger('spacer_worker.test').info('not shown')
    logging.getLogger('spacer_worker.test').warning('shown')
    text = path.read_text()
    assert 'not shown' not in text
    assert ' - WARNING:spacer_worker.test\nshown' in text


def test_a_bad_level_or_format_is_named(monkeypatch, restore_root_logging):
    monkeypatch.setenv('SPACER_LOG_DESTINATION', 'console')
    monkeypatch.setenv('SPACER_LOG_LEVEL', 'LOUD')
    with pytest.raises(ConfigError, match='LOUD'):
        logs.configure_logging()
    with pytest.raises(ConfigError, match='yaml'):
        logs.configure_logging(level='INFO', fmt='yaml')


def test_worker_json_lines_carry_the_task_context(app, start_worker,
                                                  data_dir, tmp_path):
    worker = start_worker('jsonlog', queues='extract', env={
        'SPACER_LOG_DESTINATION': 'console', 'SPACER_LOG_FORMAT': 'json',
        'SPACER_LOG_LEVEL': 'INFO',
        'SPACER_FILESYSTEM_READ_ROOTS': str(data_dir),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(data_dir)})
    msg = extract_msg(data_dir, 'logged')
    result = app.send_task('spacer.extract_features', args=[msg.serialize()],
                           queue='extract')
    result.get(timeout=60)

    def finished_line():
        entries = [json.loads(line) for line in
                   worker.log_text().splitlines() if line.startswith('{')]
        done = [e for e in entries if e['message'].startswith(
            'task finished')]
        return done[0] if done else None

    entry = wait_for(finished_line, 30, what='task finished log line')
    assert entry['task_id'] == result.id
    assert entry['task_name'] == 'spacer.extract_features'
    assert entry['job_token'] == 'logged'
    assert entry['queue'] == 'extract'
    assert entry['worker'].startswith('jsonlog@')
    assert entry['level'] == 'INFO' and entry['time'].endswith('Z')
    assert isinstance(entry['duration'], float) and entry['duration'] >= 0
