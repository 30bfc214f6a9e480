"""Real services for the client, CoralNet-queue and CLI tests: a
redis-server on a free port and celery worker subprocesses against it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen

    def client(self):
        import redis
        return redis.Redis.from_url(self.url)


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - keep polling until deadline
            last = e
        time.sleep(0.1)
    raise RuntimeError(f'{what} not ready after {timeout} s (last: {last!r})')


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    binary = shutil.which('redis-server')
    if binary is None:
        if os.environ.get('CI'):
            pytest.fail('redis-server missing in CI; scripts/test.sh installs it')
        pytest.skip('redis-server not installed')
    port = free_port()
    data = tmp_path_factory.mktemp('redis')
    process = subprocess.Popen(
        [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
         '--appendonly', 'no', '--dir', str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(f'redis://127.0.0.1:{port}/0', port, process)
    try:
        _wait_for(lambda: server.client().ping(), 10, 'redis-server')
        yield server
    finally:
        process.terminate()
        process.wait(10)


def worker_env(redis_url: str, **settings: str) -> dict[str, str]:
    """Environment for a subprocess talking to the test Redis: no
    developer SPACER_* variables, no secrets file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')}
    env.update({
        'SPACER_BROKER_URL': redis_url,
        'SPACER_RESULT_BACKEND': redis_url,
        'SPACER_SECRETS_PATH': str(REPO / 'tests' / 'client' / 'no-secrets.json'),
        'PYTHONPATH': str(REPO),
    })
    env.update({f'SPACER_{k}': v for k, v in settings.items()})
    return env


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_worker(redis_url: str, queues: str, name: str, log_dir: Path,
                 concurrency: int = 1, **settings: str) -> Worker:
    """A real ``celery -A spacer_worker worker`` subprocess; returns once it
    answers a ping."""
    from spacer_worker.celery import create_app

    log = log_dir / f'{name}.log'
    node = f'{name}@%h'
    process = subprocess.Popen(
        [sys.executable, '-m', 'celery', '-A', 'spacer_worker', 'worker',
         '-Q', queues, '-c', str(concurrency), '-n', node, '-l', 'INFO',
         '--without-mingle', '--without-gossip'],
        env=worker_env(redis_url, **settings), cwd=str(REPO),
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT,
        start_new_session=True)
    worker = Worker(name, process, log)
    app = create_app(set_as_current=False, broker_url=redis_url,
                     result_backend=redis_url)
    hostname = f'{name}@{socket.gethostname()}'

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f'worker {name} exited: {log.read_text()[-3000:]}')
        return bool(app.control.ping(destination=[hostname], timeout=0.5))
    try:
        _wait_for(answers, 60, f'celery worker {name}')
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture(scope='session')
def worker_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('worker-logs')


@pytest.fixture(scope='session')
def celery_worker(redis_server, worker_logs) -> Iterator[Worker]:
    """One worker on the three contract queues (prefork, 2 processes)."""
    worker = start_worker(redis_server.url, 'extract,train,classify',
                          'client-tests', worker_logs, concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture
def app(redis_server):
    """A client-side app on the test Redis (the package's app is left alone)."""
    from spacer_worker.celery import create_app
    app = create_app(set_as_current=False, broker_url=redis_server.url,
                     result_backend=redis_server.url)
    yield app
    app.close()
