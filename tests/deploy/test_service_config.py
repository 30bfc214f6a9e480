"""The redis and flower services as compose.yaml configures them, run with
real redis-server and Flower processes (paths and ports made local)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.deploy.conftest import CONFIG_DIR, REPO, read_env_file, require_tool
from tests.services import free_port, kill_group, wait_for


def compose_command(value: list[str] | str) -> list[str]:
    """A command as the container receives it: compose turns $$ into $."""
    return [part.replace('$$', '$') for part in value]


def local_paths(part: str) -> str:
    """A service command with the files compose mounts at their repo paths."""
    return part.replace('/opt/spacer/refuse-placeholders.sh',
                        str(REPO / 'docker' / 'refuse-placeholders.sh'))


@pytest.fixture
def start(tmp_path):
    procs: list[subprocess.Popen] = []

    def run(argv, env, cwd=tmp_path, log='service.log') -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, cwd=cwd,
                                stdout=open(tmp_path / log, 'a'),
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc
    yield run
    for proc in procs:
        kill_group(proc)
        proc.wait(10)


def test_redis_requires_the_password_and_persists_across_restarts(
        compose, start, tmp_path):
    require_tool('redis-server', 'scripts/test.sh installs it')
    import redis
    service = compose['services']['redis']
    password = read_env_file(CONFIG_DIR / 'redis.env')['REDIS_PASSWORD']
    port = free_port()
    # The service's own command, with the config file at its repo path and
    # a local port; the password still arrives through REDIS_PASSWORD.
    argv = [local_paths(part).replace(
                '/usr/local/etc/redis/redis.conf --dir /data -',
                f'{CONFIG_DIR / "redis.conf"} --port {port} '
                f'--bind 127.0.0.1 --dir {tmp_path} -')
            for part in compose_command(service['command'])]
    env = {'PATH': os.environ['PATH'], 'REDIS_PASSWORD': password}
    healthcheck = compose_command(service['healthcheck']['test'])
    assert healthcheck[0] == 'CMD-SHELL'
    probe = healthcheck[1].replace('redis-cli', f'redis-cli -p {port}')

    def healthy() -> bool:
        return subprocess.run(['sh', '-c', probe], env=env).returncode == 0

    proc = start(argv, env)
    wait_for(healthy, 20, what='redis healthcheck')

    anonymous = redis.Redis(port=port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    client = redis.Redis(port=port, password=password)
    assert client.config_get('appendonly') == {'appendonly': 'yes'}
    assert client.config_get('maxmemory-policy') == {
        'maxmemory-policy': 'noeviction'}
    # The memory budget of docs/operations.md is in force.
    assert client.config_get('maxmemory') == {'maxmemory': str(2 * 1024**3)}
    client.rpush('extract', 'task-1', 'task-2')

    # docker compose stop / up: SIGTERM, then the same command again.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    start(argv, env)
    wait_for(healthy, 20, what='redis healthcheck after restart')
    assert client.lrange('extract', 0, -1) == [b'task-1', b'task-2']
    assert (Path(tmp_path) / 'appendonlydir').is_dir()


def test_redis_refuses_to_start_without_a_password(compose, tmp_path):
    require_tool('redis-server', 'scripts/test.sh installs it')
    argv = [local_paths(part) for part in
            compose_command(compose['services']['redis']['command'])]
    run = subprocess.run(argv, env={'PATH': os.environ['PATH']},
                         cwd=tmp_path, capture_output=True, text=True,
                         timeout=30)
    assert run.returncode != 0
    assert 'set REDIS_PASSWORD in config/redis.env' in run.stderr


def test_flower_asks_for_a_password_and_serves_metrics(
        compose, start, redis_url, tmp_path):
    service = compose['services']['flower']
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'CELERY_', 'FLOWER_'))}
    settings = read_env_file(CONFIG_DIR / 'flower.env')
    port = free_port()
    env.update(settings)
    env.update({
        'SPACER_BROKER_URL': redis_url,
        'SPACER_SECRETS_PATH': str(tmp_path / 'no-secrets.json'),
        'PYTHONPATH': str(REPO),
        'FLOWER_DB': str(tmp_path / 'flower.db'),   # /data in the image
        'FLOWER_PORT': str(port),
        'FLOWER_ADDRESS': '127.0.0.1',
    })
    start([str(REPO / 'docker' / 'entrypoint.sh'), *service['command']], env,
          log='flower.log')
    base = f'http://127.0.0.1:{port}'

    def up():
        try:
            return requests.get(f'{base}/healthcheck', timeout=2).ok
        except requests.ConnectionError:
            return False
    wait_for(up, 60, what='flower /healthcheck')

    user, password = settings['FLOWER_BASIC_AUTH'].split(':', 1)
    assert requests.get(f'{base}/workers', timeout=5).status_code == 401
    assert requests.get(f'{base}/workers', auth=(user, 'wrong'),
                        timeout=5).status_code == 401
    assert requests.get(f'{base}/workers', auth=(user, password),
                        timeout=5).status_code == 200
    # Prometheus scrapes /metrics without credentials (Flower 2.x).
    metrics = requests.get(f'{base}/metrics', timeout=5)
    assert metrics.status_code == 200
    assert 'flower_events_total' in metrics.text
    # The compose healthcheck probes the same /healthcheck inside.
    assert 'localhost:5555/healthcheck' in ' '.join(
        service['healthcheck']['test'])
