"""``spacer-worker status``, ``result`` and ``submit --wait`` on records
that are malformed or forged (issue 28, item 10): a short error and exit
status 1, never a Python traceback. Run as a user runs it (a subprocess)
against a real Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import redis as redis_py

from tests.client.helpers import extract_msg, write_image
from tests.client.test_cli import _cli
from tests.services import REPO, worker_env


@pytest.fixture
def msg_file(tmp_path):
    image = write_image(tmp_path / 'a.png')
    path = tmp_path / 'msg.json'
    path.write_text(json.dumps(extract_msg(
        image, tmp_path / 'a.featurevector',
        token=f'cli-{uuid.uuid4().hex[:8]}').serialize()))
    return path


def _parked(msg_file, env) -> str:
    """Submit to a queue no worker consumes; the handle."""
    done = _cli('submit', str(msg_file), '--queue',
                f'parked-{uuid.uuid4().hex[:8]}', env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _record_key(handle: str) -> str:
    return f'celery-task-meta-{handle.rsplit(":", 1)[1]}'


def _assert_reported(done, *words):
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert 'Traceback' not in done.stderr, done.stderr
    assert 'RecordError' in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr


@pytest.mark.parametrize('record, words', [
    (b'not json', ['not JSON']),
    (b'[1, 2]', ['list']),
    (b'{"status": 5}', ['status']),
    (b'\x00celery-compressed\x00application/x-gzip\x00xx',
     ['RECORD_COMPRESSION']),
])
def test_status_and_result_report_a_bad_record_as_an_error(
        record, words, msg_file, redis_url):
    env = worker_env(redis_url)
    handle = _parked(msg_file, env)
    redis_py.Redis.from_url(redis_url).set(_record_key(handle), record)

    _assert_reported(_cli('status', handle, env=env), *words)
    _assert_reported(_cli('result', handle, '--timeout', '5', env=env),
                     *words)


def test_result_reports_a_success_that_is_not_a_result(msg_file, redis_url):
    env = worker_env(redis_url)
    handle = _parked(msg_file, env)
    task_id = handle.rsplit(':', 1)[1]
    redis_py.Redis.from_url(redis_url).set(_record_key(handle), json.dumps(
        {'status': 'SUCCESS', 'result': [1], 'task_id': task_id}))

    _assert_reported(_cli('result', handle, '--timeout', '5', env=env),
                     'ExtractFeaturesReturnMsg')


def test_submit_wait_reports_bad_records_as_an_error(msg_file, redis_url):
    env = worker_env(redis_url)
    script = shutil.which('spacer-worker')
    command = [script] if script else [sys.executable, '-m',
                                       'spacer_worker.cli']
    proc = subprocess.Popen(
        [*command, 'submit', str(msg_file), '--wait', '--timeout', '60',
         '--queue', f'parked-{uuid.uuid4().hex[:8]}'],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert 'handle:' in first, first
        handle = first.rsplit('handle:', 1)[1].strip()
        task_id = handle.rsplit(':', 1)[1]
        redis = redis_py.Redis.from_url(redis_url)
        # Progress a worker never writes, then a record that is not JSON
        redis.set(_record_key(handle), json.dumps(
            {'status': 'PROGRESS', 'task_id': task_id,
             'result': {'done': 'x', 'total': [1], 'ref_acc': 'high'}}))
        time.sleep(1.5)
        redis.set(_record_key(handle), b'{"status"')
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                       stderr)
    assert done.returncode == 1, stderr
    assert 'Traceback' not in stderr, stderr
    assert 'RecordError' in stderr and 'not JSON' in stderr, stderr


def test_result_without_a_timeout_stops_at_the_longest_life(msg_file,
                                                             redis_url):
    # Given a job whose PENDING record is made to last forever, and
    # settings where no job can live more than 2 s
    env = worker_env(redis_url)
    env.update(SPACER_JOB_MAX_QUEUE_WAIT='1', SPACER_TASK_MAX_RETRIES='0',
               SPACER_RETRY_BACKOFF_MAX='0')
    for kind in ('EXTRACT', 'TRAIN', 'CLASSIFY', 'EXTRACT_HIGH',
                 'TRAIN_HIGH'):
        env[f'SPACER_{kind}_TIME_LIMIT'] = '1'
    handle = _parked(msg_file, env)
    redis_py.Redis.from_url(redis_url).persist(_record_key(handle))

    # Then `result` with no --timeout ends, saying why, instead of hanging
    started = time.monotonic()
    done = _cli('result', handle, env=env, timeout=60)
    assert time.monotonic() - started < 30
    _assert_reported(done, 'still PENDING', 'not believed')
