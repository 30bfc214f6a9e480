"""Real processes for the tests: redis-server, celery workers, Flower, and
the helpers around them (one copy for every folder; fixtures that use them
are in tests/conftest.py). Each runs in its own process group, so a test can kill a whole
worker (parent and pool children) the way an OOM killer or a lost host does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which('redis-server') or '/usr/bin/redis-server'
# The workers' Python: the client side may run on another one (the Python
# 3.10 client venv runs these tests against 3.11 workers).
WORKER_PYTHON = os.environ.get('TEST_WORKER_PYTHON') or sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1,
             what: str = 'condition'):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} not met after {timeout} s')
        time.sleep(interval)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group this test started (never anything else)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class RedisServer:
    """A redis-server with AOF persistence in a temp dir, restartable.

    ``appendfsync``: 'always' for tests (a restart loses nothing);
    ``benchmarks/chaos.py`` runs 'everysec', as config/redis.conf does."""

    def __init__(self, directory: Path, appendfsync: str = 'always') -> None:
        self.dir = directory
        self.appendfsync = appendfsync
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f'redis://127.0.0.1:{self.port}/{db}'

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db))

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1',
             '--dir', str(self.dir), '--save', '', '--appendonly', 'yes',
             '--appendfsync', self.appendfsync, '--databases', '64',
             '--logfile', str(self.dir / 'redis.log')],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.ConnectionError:
                return False
        wait_for(up, 20, what='redis-server up')

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()   # SIGTERM: redis flushes its AOF
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait(5)
            self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@contextlib.contextmanager
def client_app(broker_url: str) -> Iterator[Any]:
    """The client side: spacer_worker's app for this Redis, with the
    package's own app left alone; closed after the block."""
    from spacer_worker.celery import create_app
    app = create_app(set_as_current=False, broker_url=broker_url,
                     result_backend=broker_url)
    try:
        yield app
    finally:
        app.close()


def base_env(broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'DIST_TEST_', 'CELERY_'))}
    env.update({
        'SPACER_BROKER_URL': broker_url,
        'SPACER_SECRETS_PATH': str(REPO / 'tests' / 'distributed' /
                                   'no-secrets.json'),
        'PYTHONPATH': str(REPO),
        'PYTHONUNBUFFERED': '1',
    })
    env.update(extra)
    return env


class Worker:
    """``celery -A spacer_worker worker`` in its own process group."""

    def __init__(self, name: str, broker_url: str, log_dir: Path,
                 queues: str = 'extract,train,classify', concurrency: int = 1,
                 env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.log = log_dir / f'worker-{name}.log'
        # Workers are closed by default (issue 9): a test's worker may read
        # and write its own temporary directory, unless the test says more.
        # Its URLs may reach the tests' HTTP servers on 127.0.0.1.
        sandbox = {'SPACER_FILESYSTEM_WRITE_ROOTS': str(log_dir),
                   'SPACER_URL_ALLOWED_HOSTS': '127.0.0.1/32'}
        self.env = base_env(broker_url, DIST_TEST_WORKER=name,
                            DIST_TEST_RUNS_URL=broker_url,
                            **{**sandbox, **(env or {})})
        self.args = [WORKER_PYTHON, '-m', 'celery', '-A', 'spacer_worker',
                     'worker', '-Q', queues, '-c', str(concurrency),
                     '-n', f'{name}@%h', '-l', 'info', '--without-mingle',
                     '--without-gossip', '-I', 'tests.distributed.worker_hooks',
                     *extra_args]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Worker:
        self._log = open(self.log, 'ab')
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors='replace') if self.log.exists() \
            else ''

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f'worker {self.name} exited:\n'
                                   f'{self.log_text()[-3000:]}')
            return ' ready.' in self.log_text()
        wait_for(ready, timeout, interval=0.2,
                 what=f'worker {self.name} ready')

    def pids(self) -> list[int]:
        """Every live process of this worker's group (parent + children)."""
        out = subprocess.run(['pgrep', '-g', str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """kill -9 the whole worker: parent and pool children."""
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(self.proc, signal.SIGKILL)
                self.proc.wait(5)
        # Children of a killed parent may linger a moment.
        kill_group(self.proc, signal.SIGKILL)
        self._log.close()


def runs(client: redis.Redis) -> list[dict]:
    """Task runs recorded by worker_hooks."""
    return [json.loads(r) for r in client.lrange('test:runs', 0, -1)]


# Short leases so a dead worker's tasks come back in seconds, not a minute.
LEASE_TTL = '3'

# WORKER_CONTROL_COMMANDS for a test that opens a queue by remote control.
CONTROL_WITH_ADD_CONSUMER = 'ping,stats,active_queues,registered,scheduled,' \
    'active,reserved,revoked,conf,query_task,report,clock,hello,' \
    'enable_events,revoke,add_consumer'


def worker_env(redis_url: str, **settings: str) -> dict[str, str]:
    """Environment for a subprocess on the test Redis: no developer SPACER_*
    variables, no secrets file; ``settings`` become SPACER_<NAME>."""
    env = base_env(redis_url, SPACER_RESULT_BACKEND=redis_url)
    env.update({f'SPACER_{k}': v for k, v in settings.items()})
    return env


def spawn_worker(redis_url: str, queues: str, name: str, log_dir: Path,
                 concurrency: int = 1, **settings: str) -> Worker:
    """A real ``celery -A spacer_worker worker`` subprocess, once ready."""
    env = {f'SPACER_{k}': v for k, v in settings.items()}
    return Worker(name, redis_url, log_dir, queues=queues,
                  concurrency=concurrency, env=env).start()


def use_s3_endpoint(monkeypatch, endpoint: str) -> None:
    """Point the S3 settings of this test at ``endpoint`` (moto or a fake)."""
    monkeypatch.setenv('SPACER_S3_ENDPOINT_URL', endpoint)
    monkeypatch.setenv('SPACER_AWS_ACCESS_KEY_ID', 'testing')
    monkeypatch.setenv('SPACER_AWS_SECRET_ACCESS_KEY', 'testing')
    monkeypatch.setenv('SPACER_AWS_REGION', 'us-east-1')
    monkeypatch.setenv('SPACER_S3_MAX_ATTEMPTS', '1')
    monkeypatch.setenv('SPACER_URL_TIMEOUT', '5')


def django_env(broker_url: str, folder: Path) -> dict[str, str]:
    """The environment of the test Django project configured as CoralNet
    is: the broker in settings.SPACER, not SPACER_* variables; its
    database and mail in ``folder``."""
    env = base_env(broker_url)
    del env['SPACER_BROKER_URL']
    env.update(TEST_REDIS_URL=broker_url,
               TEST_DJANGO_DB=str(folder / 'db.sqlite3'),
               TEST_DJANGO_MAIL_DIR=str(folder / 'mail'))
    return env


def run_django(env: dict[str, str], *args: str,
               python: str = sys.executable) -> dict | list:
    """``python -m django ARGS`` in the test Django project; the JSON its
    command printed last (the project's commands answer in JSON)."""
    done = subprocess.run(
        [python, '-m', 'django', *args,
         '--settings', 'tests.django_project.settings'],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}
