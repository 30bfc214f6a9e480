"""Real services for the client, CoralNet-queue and CLI tests: one
redis-server and one celery worker subprocess for the session, built on the
process helpers of tests/distributed/services.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.services import (
    REDIS_SERVER,
    REPO,
    RedisServer,
    Worker,
    base_env,
    free_port,
)

__all__ = ['REPO', 'free_port', 'start_worker', 'worker_env']


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    import shutil
    if not shutil.which(REDIS_SERVER):
        pytest.fail('redis-server is required (scripts/test.sh installs it).')
    server = RedisServer(tmp_path_factory.mktemp('client-redis'))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def redis_url(redis_server) -> str:
    return redis_server.url(0)


def worker_env(redis_url: str, **settings: str) -> dict[str, str]:
    """Environment for a subprocess on the test Redis: no developer SPACER_*
    variables, no secrets file; ``settings`` become SPACER_<NAME>."""
    env = base_env(redis_url, SPACER_RESULT_BACKEND=redis_url)
    env.update({f'SPACER_{k}': v for k, v in settings.items()})
    return env


def start_worker(redis_url: str, queues: str, name: str, log_dir: Path,
                 concurrency: int = 1, **settings: str) -> Worker:
    """A real ``celery -A spacer_worker worker`` subprocess, once ready."""
    env = {f'SPACER_{k}': v for k, v in settings.items()}
    return Worker(name, redis_url, log_dir, queues=queues,
                  concurrency=concurrency, env=env).start()


@pytest.fixture(scope='session')
def worker_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('worker-logs')


@pytest.fixture(scope='session')
def celery_worker(redis_url, worker_logs, tmp_path_factory
                  ) -> Iterator[Worker]:
    """One worker on the three contract queues (prefork, 2 processes),
    allowed to read and write this run's temporary directories (where the
    tests put their images and features)."""
    worker = start_worker(
        redis_url, 'extract,train,classify', 'client-tests', worker_logs,
        concurrency=2,
        FILESYSTEM_WRITE_ROOTS=str(tmp_path_factory.getbasetemp()))
    yield worker
    worker.stop()


@pytest.fixture
def app(redis_url):
    """A client-side app on the test Redis (the package's app is left alone)."""
    from spacer_worker.celery import create_app
    app = create_app(set_as_current=False, broker_url=redis_url,
                     result_backend=redis_url)
    yield app
    app.close()
