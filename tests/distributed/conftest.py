"""Fixtures: one redis-server for the session (each test on its own Redis
database), celery worker subprocesses, a client-side app."""

from __future__ import annotations

import itertools
import shutil

import pytest

from tests.distributed.services import REDIS_SERVER, RedisServer, Worker

# Short leases so a dead worker's tasks come back in seconds, not a minute.
LEASE_TTL = '3'

_databases = itertools.count(1)


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory):
    if not shutil.which(REDIS_SERVER):
        pytest.fail('redis-server is required (scripts/test.sh installs it).')
    server = RedisServer(tmp_path_factory.mktemp('redis'))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker_url(redis_server):
    """A fresh Redis database for this test (no leftovers between tests)."""
    db = next(_databases) % 63 + 1
    redis_server.client(db).flushdb()
    return redis_server.url(db)


@pytest.fixture
def redis_db(redis_server, broker_url):
    client = redis_server.client(int(broker_url.rsplit('/', 1)[1]))
    yield client
    client.close()


@pytest.fixture
def app(broker_url):
    """The client side: spacer_worker's app configured for this Redis."""
    from spacer_worker.celery import create_app
    app = create_app(set_as_current=False, broker_url=broker_url,
                     result_backend=broker_url)
    yield app
    app.close()


@pytest.fixture
def start_worker(broker_url, tmp_path):
    """start_worker(name, queues=..., concurrency=..., env=...) -> Worker;
    every worker is stopped at the end of the test."""
    workers: list[Worker] = []

    def start(name: str, wait: bool = True, env: dict | None = None,
              **kwargs) -> Worker:
        env = {'SPACER_LEASE_TTL': LEASE_TTL, **(env or {})}
        worker = Worker(name, broker_url, tmp_path, env=env, **kwargs)
        workers.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / 'data'
    d.mkdir()
    return d


# A real S3 endpoint (moto's server) for payloads kept in S3.
from tests.storage.conftest import moto_endpoint, s3_bucket  # noqa: E402, F401
