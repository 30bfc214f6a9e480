"""The queue exporter shows a broker Redis filling up and refusing writes.

The broker runs noeviction at a maxmemory: when full, Redis refuses
submissions and results with OOM errors. `spacer-worker metrics` must show
that coming and happening (alerts in config/prometheus/alerts.yml)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from tests.distributed.test_metrics import scrape, total, wait_port
from tests.services import REPO, base_env, free_port, wait_for


@pytest.fixture
def full_redis(tmp_path):
    server = shutil.which('redis-server')
    if server is None:
        pytest.skip('redis-server is not installed (scripts/test.sh installs it)')
    port = free_port()
    proc = subprocess.Popen(
        [server, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
         '--appendonly', 'no', '--maxmemory', '3mb',
         '--maxmemory-policy', 'noeviction', '--dir', str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, what='redis-server')
    refused = 0
    for i in range(200):
        try:
            client.set(f'fill:{i}', b'x' * 100_000)
        except redis.exceptions.OutOfMemoryError:
            refused += 1
    assert refused, 'Redis never reached its maxmemory'
    yield port, refused
    proc.terminate()
    proc.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def test_the_exporter_reports_redis_memory_and_refused_writes(full_redis):
    port, refused = full_redis
    url = f'redis://127.0.0.1:{port}/0'
    metrics_port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, '-m', 'spacer_worker.cli', 'metrics', '--port',
         str(metrics_port)], cwd=REPO, env=base_env(url),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(metrics_port)
        samples = scrape(metrics_port)
    finally:
        exporter.terminate()
        exporter.communicate(timeout=10)
    assert total(samples, 'spacer_redis_memory_max_bytes') == 3 * 1024 * 1024
    assert total(samples, 'spacer_redis_memory_used_bytes') > 2 * 1024 * 1024
    assert total(samples, 'spacer_redis_oom_rejected_total') >= refused
    assert total(samples, 'spacer_redis_evicted_keys_total') == 0
