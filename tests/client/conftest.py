"""The client, CoralNet-queue and CLI tests share one celery worker for the
folder, on the folder's own Redis database (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Worker, spawn_worker


@pytest.fixture(scope='package')
def broker_url(redis_url) -> str:
    # The folder's worker listens on the folder's database, so every test
    # here (and the root's app fixture) talks to that one.
    return redis_url


@pytest.fixture(scope='package')
def worker_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('worker-logs')


@pytest.fixture(scope='package')
def celery_worker(redis_url, worker_logs, tmp_path_factory
                  ) -> Iterator[Worker]:
    """One worker on the three contract queues (prefork, 2 processes),
    allowed to read and write this run's temporary directories (where the
    tests put their images and features)."""
    worker = spawn_worker(
        redis_url, 'extract,train,classify', 'client-tests', worker_logs,
        concurrency=2,
        FILESYSTEM_WRITE_ROOTS=str(tmp_path_factory.getbasetemp()))
    yield worker
    worker.stop()
