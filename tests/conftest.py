from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reference import reference_python
from tests.services import (
    LEASE_TTL,
    REDIS_SERVER,
    REPO,
    RedisServer,
    Worker,
    client_app,
    free_port,
    use_s3_endpoint,
    worker_env,
)

# Redis databases: 0-7 for one folder's session services each (redis_url),
# 8-63 handed out per test (broker_url), so no test sees another's keys.
_PACKAGE_DBS = itertools.count(0)
_TEST_DBS = itertools.count(0)


@pytest.fixture(scope='session')
def pyspacer_reference():
    """Path of the PySpacer 0.14.0 python; in CI its absence is a failure."""
    python = reference_python()
    if python is None:
        if os.environ.get('CI'):
            pytest.fail('PySpacer reference venv missing in CI; '
                        'scripts/test.sh should have built it.')
        pytest.skip('PySpacer reference venv missing; run '
                    'scripts/reference-venv.sh')
    return python


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path_factory):
    """Tests never read a developer's secrets.json or SPACER_* variables."""
    for name in list(os.environ):
        if name.startswith('SPACER_') and name not in (
                'SPACER_REFERENCE_PYTHON',):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp('nosecrets') / 'secrets.json'
    monkeypatch.setenv('SPACER_SECRETS_PATH', str(empty))
    from spacer_worker import config
    config.reload()
    yield
    config.reload()


# --- one redis-server for the whole run -----------------------------------

@pytest.fixture(scope='session')
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    if not shutil.which(REDIS_SERVER):
        pytest.fail('redis-server is required (scripts/test.sh installs it).')
    server = RedisServer(tmp_path_factory.mktemp('redis'))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='package')
def redis_url(redis_server) -> str:
    """A Redis database of this test folder's own (its session workers)."""
    db = next(_PACKAGE_DBS)
    if db > 7:
        pytest.fail('more than 8 folders want a Redis database of their own')
    redis_server.client(db).flushdb()
    return redis_server.url(db)


@pytest.fixture
def broker_url(redis_server) -> str:
    """A fresh Redis database for this test (no leftovers between tests)."""
    db = 8 + next(_TEST_DBS) % 56
    redis_server.client(db).flushdb()
    return redis_server.url(db)


@pytest.fixture
def redis_db(redis_server, broker_url):
    client = redis_server.client(int(broker_url.rsplit('/', 1)[1]))
    yield client
    client.close()


@pytest.fixture
def app(broker_url):
    """The client side: spacer_worker's app configured for this test's
    Redis (the package's own app is left alone)."""
    with client_app(broker_url) as app:
        yield app


@pytest.fixture
def start_worker(broker_url, tmp_path):
    """start_worker(name, queues=..., concurrency=..., env=...) -> Worker on
    this test's Redis; every worker is stopped at the end of the test."""
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


# --- S3: moto's real HTTP server ------------------------------------------

@pytest.fixture(scope='session')
def moto_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint: moto's server, in a thread of this process."""
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=port,
                                verbose=False)
    server.start()
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[str]:
    """A fresh, empty bucket on the moto endpoint; settings point at it."""
    from spacer_worker.storage import s3 as s3_module
    use_s3_endpoint(monkeypatch, moto_endpoint)
    name = f'bucket-{time.monotonic_ns()}'
    client = s3_module.s3_client()
    client.create_bucket(Bucket=name)
    yield name
    listing = client.list_objects_v2(Bucket=name).get('Contents', [])
    for item in listing:
        client.delete_object(Bucket=name, Key=item['Key'])
    client.delete_bucket(Bucket=name)


# --- The demo, run once ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DemoRun:
    done: subprocess.CompletedProcess
    out: Path
    images: int
    epochs: int


@pytest.fixture(scope='session')
def embedded_demo(tmp_path_factory) -> DemoRun:
    """``spacer-worker demo`` in embedded mode (no broker), run once for the
    CLI test and the report test: it trains for a minute."""
    env = worker_env('unused')
    del env['SPACER_BROKER_URL'], env['SPACER_RESULT_BACKEND']
    out = tmp_path_factory.mktemp('embedded-demo') / 'demo'
    images, epochs = 5, 50
    # The installed console script when there is one, else the module.
    script = shutil.which('spacer-worker')
    command = [script] if script else [sys.executable, '-m',
                                       'spacer_worker.cli']
    done = subprocess.run(
        [*command, 'demo', '--out', str(out), '--images', str(images),
         '--points', '40', '--epochs', str(epochs)], cwd=str(REPO), env=env,
        capture_output=True, text=True, timeout=600)
    return DemoRun(done, out, images, epochs)
