"""Fixtures for the deployment checks: the parsed compose file, its env
files, and a real redis-server for the tests that start workers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# One copy of the process helpers for every suite that starts services.
from tests.distributed.services import free_port, wait_for  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / 'compose.yaml'
CONFIG_DIR = REPO / 'config'


def require_tool(name: str, install_hint: str) -> str:
    """Path of a command-line tool; missing: skip locally, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f'{name} is not installed ({install_hint}).'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them (no quoting in our files)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if '=' not in line:
            raise ValueError(f'{path}:{number}: not KEY=VALUE: {raw!r}')
        key, value = line.split('=', 1)
        values[key.strip()] = value
    return values


@pytest.fixture(scope='session')
def compose() -> dict:
    import yaml
    with open(COMPOSE_FILE) as f:
        return yaml.safe_load(f)


def service_env(service: dict) -> dict[str, str]:
    """The environment compose gives a service: its env files in order,
    then `environment:`."""
    env: dict[str, str] = {}
    files = service.get('env_file') or []
    for name in [files] if isinstance(files, str) else files:
        env.update(read_env_file(REPO / name))
    extra = service.get('environment') or {}
    if isinstance(extra, list):
        extra = dict(item.split('=', 1) for item in extra)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope='session')
def redis_url(tmp_path_factory):
    """A throwaway redis-server (no persistence) for worker tests."""
    server = require_tool('redis-server', 'scripts/test.sh installs it')
    import redis
    port = free_port()
    directory = tmp_path_factory.mktemp('deploy-redis')
    proc = subprocess.Popen(
        [server, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
         '--appendonly', 'no', '--dir', str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f'redis://127.0.0.1:{port}/0'

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False
    try:
        wait_for(up, 20, what='redis-server up')
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
