"""Fixtures for the deployment checks: the parsed compose file, its env
files (the redis-server is the run's one, from tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
