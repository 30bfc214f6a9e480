"""Flower, pointed at the same Redis, sees the workers and finished tasks
(the app sends task events and the sent event for it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.builders import extract_msg
from tests.services import REPO, base_env, free_port, kill_group, wait_for


@pytest.fixture
def flower(broker_url, tmp_path):
    port = free_port()
    log = open(tmp_path / 'flower.log', 'wb')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'celery', '-A', 'spacer_worker', 'flower',
         f'--port={port}', '--address=127.0.0.1'],
        cwd=REPO, env=base_env(broker_url, FLOWER_UNAUTHENTICATED_API='true'),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'

    def up():
        try:
            return requests.get(f'{base}/healthcheck', timeout=2).ok
        except requests.ConnectionError:
            return False
    try:
        wait_for(up, 60, interval=0.3, what='flower up')
        yield base
    finally:
        kill_group(proc)
        proc.wait(10)
        log.close()


def test_flower_lists_workers_and_finished_tasks(flower, app, start_worker,
                                                 data_dir):
    start_worker('seen', queues='extract')
    results = [app.send_task('spacer.extract_features',
                             args=[extract_msg(data_dir, f'f{i}').serialize()],
                             queue='extract') for i in range(2)]
    for r in results:
        r.get(timeout=60)

    workers = wait_for(lambda: requests.get(
        f'{flower}/api/workers', params={'refresh': 1}, timeout=10).json(),
        30, what='flower sees a worker')
    assert any(name.startswith('seen@') for name in workers)

    def finished():
        tasks = requests.get(f'{flower}/api/tasks', timeout=10).json()
        done = {tid: t for tid, t in tasks.items() if t['state'] == 'SUCCESS'}
        return done if all(r.id in done for r in results) else None
    tasks = wait_for(finished, 30, interval=0.5, what='flower sees tasks')
    for r in results:
        assert tasks[r.id]['name'] == 'spacer.extract_features'
        assert tasks[r.id]['worker'].startswith('seen@')
