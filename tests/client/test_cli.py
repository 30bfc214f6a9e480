"""The ``spacer-worker`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.client.helpers import extract_msg, write_image
from tests.services import REPO, free_port, worker_env


def _cli(*args, env, timeout=300) -> subprocess.CompletedProcess:
    # The installed console script when there is one, else the module.
    script = shutil.which('spacer-worker')
    command = [script] if script else [sys.executable, '-m', 'spacer_worker.cli']
    return subprocess.run([*command, *args], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_config_shows_sources_and_hides_secrets(tmp_path):
    secrets = tmp_path / 'secrets.json'
    secrets.write_text(json.dumps({'AWS_SECRET_ACCESS_KEY': 'topsecret-key',
                                   'MAX_POINTS_PER_IMAGE': 50}))
    env = worker_env('redis://spacer:hunter2@redis.example:6379/0')
    env['SPACER_SECRETS_PATH'] = str(secrets)
    del env['SPACER_RESULT_BACKEND']

    done = _cli('config', env=env)

    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert 'topsecret-key' not in done.stdout and 'hunter2' not in done.stdout
    assert 'redis://spacer:***@redis.example:6379/0' in rows['BROKER_URL']
    assert 'environment (SPACER_BROKER_URL)' in rows['BROKER_URL']
    assert "'***'" in rows['AWS_SECRET_ACCESS_KEY'] or \
        '***' in rows['AWS_SECRET_ACCESS_KEY']
    assert f'secrets file ({secrets})' in rows['AWS_SECRET_ACCESS_KEY']
    assert '50' in rows['MAX_POINTS_PER_IMAGE']
    assert rows['MAX_IMAGE_PIXELS'].rstrip().endswith('default')


def test_submit_wait_prints_the_result(redis_url, celery_worker, tmp_path):
    from spacer_worker.messages import ExtractFeaturesReturnMsg

    image = write_image(tmp_path / 'a.png')
    msg_file = tmp_path / 'msg.json'
    msg_file.write_text(json.dumps(
        extract_msg(image, tmp_path / 'a.featurevector').serialize()))

    done = _cli('submit', str(msg_file), '--wait', '--timeout', '60',
                env=worker_env(redis_url))

    assert done.returncode == 0, done.stderr
    result = ExtractFeaturesReturnMsg.deserialize(json.loads(done.stdout))
    assert result.runtime >= 0
    assert "queue 'extract'" in done.stderr
    assert 'extract_features' in done.stderr        # the progress bar


def test_submit_then_status_and_result_by_handle(redis_url, celery_worker,
                                                 tmp_path):
    image = write_image(tmp_path / 'b.png')
    msg_file = tmp_path / 'msg.json'
    msg_file.write_text(json.dumps(
        extract_msg(image, tmp_path / 'b.featurevector').serialize()))
    env = worker_env(redis_url)

    submitted = _cli('submit', str(msg_file), '--priority', '0', env=env)
    assert submitted.returncode == 0, submitted.stderr
    handle = submitted.stdout.strip()
    assert handle.startswith('spacer.extract_features:extract:')

    result = _cli('result', handle, '--timeout', '60', env=env)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {'extractor_loaded_remotely',
                                              'runtime'}
    status = _cli('status', handle, env=env)
    assert json.loads(status.stdout)['state'] == 'SUCCESS'


def test_submit_failure_exits_1_with_the_error(redis_url, celery_worker,
                                               tmp_path):
    msg_file = tmp_path / 'msg.json'
    msg_file.write_text(json.dumps(extract_msg(
        tmp_path / 'nope.png', tmp_path / 'a.featurevector').serialize()))

    done = _cli('submit', str(msg_file), '--wait', '--timeout', '60',
                env=worker_env(redis_url))

    assert done.returncode == 1
    assert 'DataNotFoundError' in done.stderr and 'nope.png' in done.stderr


def test_submit_rejects_a_file_that_is_not_a_message(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"hello": 1}')
    done = _cli('submit', str(bad), env=worker_env('redis://127.0.0.1:1/0'))
    assert done.returncode == 2
    assert 'Cannot tell which message' in done.stderr


def test_check_exit_code_follows_worker_health(redis_url, celery_worker):
    env = worker_env(redis_url)

    healthy = _cli('check', '--queue', 'extract', '--timeout', '3', env=env)
    assert healthy.returncode == 0, healthy.stderr
    assert 'client-tests@' in healthy.stdout

    missing = _cli('check', '--queue', 'nobody-consumes', '--timeout', '3',
                   env=env)
    assert missing.returncode == 1
    assert 'nobody-consumes' in missing.stderr

    down = _cli('check', '--timeout', '2',
                env=worker_env(f'redis://127.0.0.1:{free_port()}/0'))
    assert down.returncode == 1
    assert 'unreachable' in down.stderr


@pytest.mark.slow
def test_demo_runs_embedded_without_a_broker(embedded_demo):
    done, out = embedded_demo.done, embedded_demo.out

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'mode: embedded' in done.stdout
    assert 'accuracy on 1 held-out images' in done.stdout
    assert (out / 'model' / 'classifier.pkl').is_file()
    report = out / 'model' / 'classifier_report' / 'index.html'
    assert 'training report' in done.stdout and str(report) in done.stdout
    assert report.is_file()
    assert len(list((out / 'features').iterdir())) == embedded_demo.images


@pytest.mark.slow
def test_demo_uses_the_broker_and_real_workers(redis_url, celery_worker,
                                               tmp_path):
    done = _cli('demo', '--out', str(tmp_path / 'demo'), '--images', '5',
                '--points', '40', '--epochs', '50',
                env=worker_env(redis_url))

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'mode: broker redis://127.0.0.1' in done.stdout
    assert 'client-tests@' in done.stdout
    assert (tmp_path / 'demo' / 'model' / 'classifier.pkl').is_file()
