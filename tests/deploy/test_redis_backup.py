"""docker/redis-backup.sh and docker/redis-restore.sh, run as the operations
guide runs them (in the redis container: here with local paths), against a
Redis started with compose.yaml's own command and config/redis.conf."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from tests.deploy.conftest import CONFIG_DIR, REPO, read_env_file, require_tool
from tests.deploy.test_service_config import local_paths  # noqa: E402
from tests.services import free_port, wait_for


def redis_service(compose, data_dir, port, env):
    argv = [local_paths(part.replace('$$', '$')).replace(
        '/usr/local/etc/redis/redis.conf --dir /data -',
        f'{CONFIG_DIR / "redis.conf"} --port {port} --bind 127.0.0.1 '
        f'--dir {data_dir} -')
        for part in compose['services']['redis']['command']]
    return subprocess.Popen(argv, env=env, cwd=data_dir,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def script(name, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(['sh', str(REPO / 'docker' / name)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_backup_then_restore_into_an_empty_volume(compose, tmp_path):
    require_tool('redis-server', 'scripts/test.sh installs it')
    import redis
    password = read_env_file(CONFIG_DIR / 'redis.env')['REDIS_PASSWORD']
    port = free_port()
    env = {'PATH': os.environ['PATH'], 'REDIS_PASSWORD': password,
           'REDIS_PORT': str(port)}
    volume = tmp_path / 'data'
    volume.mkdir()
    client = redis.Redis(port=port, password=password)

    def serve():
        proc = redis_service(compose, volume, port, env)

        def up():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, 20, what='redis up')
        return proc

    proc = serve()
    try:
        client.rpush('train\x06\x165', 'queued-1', 'queued-2')
        backup = script('redis-backup.sh', env, volume)
        assert backup.returncode == 0, backup.stderr
        assert 'snapshot written' in backup.stdout
        saved = tmp_path / 'dump-backup.rdb'
        shutil.copy(volume / 'dump.rdb', saved)
        client.rpush('train\x06\x165', 'after-backup')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    # Disaster: the volume is lost. A new, empty one gets the snapshot.
    shutil.rmtree(volume)
    volume.mkdir()
    restore = script('redis-restore.sh', {
        **env, 'DATA_DIR': str(volume), 'BACKUP': str(saved),
        'REDIS_CONF': str(CONFIG_DIR / 'redis.conf')}, volume)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert (volume / 'appendonlydir').is_dir()

    proc = serve()   # the normal start, AOF on
    try:
        assert client.lrange('train\x06\x165', 0, -1) == [b'queued-1',
                                                          b'queued-2']
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
