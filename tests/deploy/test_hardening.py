"""Issue 9's deployment rules, read from compose.yaml as docker-compose
resolves it, and the placeholder-password refusal run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from tests.deploy.conftest import CONFIG_DIR, REPO, read_env_file
from tests.deploy.test_compose_config import docker_compose
from tests.deploy.test_service_config import compose_command, local_paths

SCRIPT = REPO / 'docker' / 'refuse-placeholders.sh'
ENTRYPOINT = REPO / 'docker' / 'entrypoint.sh'
PLACEHOLDER = 'change-me-local-only'
# Grafana writes beside its configuration at start.
WRITABLE_ROOT = {'grafana'}


@pytest.fixture(scope='module')
def resolved() -> dict:
    """Every service of every profile, merged and interpolated."""
    run = docker_compose('--profile', 'gpu', '--profile', 'cpu',
                         '--profile', 'monitoring', 'config')
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)['services']


def test_every_container_drops_capabilities_and_is_bounded(resolved):
    for name, service in resolved.items():
        assert service.get('cap_drop') == ['ALL'], name
        assert 'no-new-privileges:true' in service.get('security_opt', []), \
            name
        assert service.get('mem_limit'), f'{name} has no memory limit'
        assert service.get('pids_limit'), f'{name} has no pids limit'
        if name not in WRITABLE_ROOT:
            assert service.get('read_only') is True, name


def _mount_targets(service: dict) -> list[str]:
    return [v['target'] if isinstance(v, dict) else v.split(':')[1]
            for v in service.get('volumes', [])]


def test_read_only_containers_can_still_write_tmp(resolved):
    for name, service in resolved.items():
        if service.get('read_only'):
            assert '/tmp' in _mount_targets(service) + list(
                service.get('tmpfs') or []), name


def _volume_at(service: dict, target: str) -> str | None:
    for v in service.get('volumes', []):
        if isinstance(v, dict) and v.get('target') == target:
            return v.get('source') if v.get('type') == 'volume' else None
        if isinstance(v, str) and v.split(':')[1] == target:
            return v.split(':')[0]
    return None


@pytest.mark.parametrize('name', ['train-worker', 'train-worker-high'])
def test_trainings_spill_to_a_disk_volume_and_keep_a_private_tmp(resolved,
                                                                 name):
    """Big feature matrices go to $TMPDIR: a named volume on disk, never the
    tmpfs that counts against the memory limit (train-worker-high's were
    once); /tmp stays each container's own, so `--scale train-worker=N`
    replicas never share their healthcheck's node file or metrics files."""
    service = resolved[name]
    assert '/tmp' in (service.get('tmpfs') or []), f'{name}: /tmp not private'
    assert '/tmp' not in _mount_targets(service), f'{name}: /tmp is shared'
    scratch = (service.get('environment') or {}).get('TMPDIR')
    assert scratch, f'{name}: no TMPDIR, so the spill lands in tmpfs /tmp'
    assert _volume_at(service, scratch), \
        f'{name}: TMPDIR={scratch} is not a named volume'
    assert scratch not in (service.get('tmpfs') or [])


def test_high_and_normal_trainings_spill_to_separate_volumes(resolved):
    volumes = [_volume_at(resolved[n], resolved[n]['environment']['TMPDIR'])
               for n in ('train-worker', 'train-worker-high')]
    assert volumes[0] != volumes[1]


def test_the_minio_worker_key_reaches_the_spacer_bucket_only(compose):
    script = compose_command(compose['services']['minio-init']['command'])[0]
    policy_text = re.search(r"<<EOF\n(.*?)\n\s*EOF", script, re.S).group(1)
    bucket = read_env_file(CONFIG_DIR / 'minio.env')['S3_BUCKET']
    policy = json.loads(policy_text.replace('$S3_BUCKET', bucket))
    resources = {r for st in policy['Statement'] for r in st['Resource']}
    assert resources == {f'arn:aws:s3:::{bucket}', f'arn:aws:s3:::{bucket}/*'}
    assert all(st['Effect'] == 'Allow' and '*' not in ''.join(st['Action'])
               for st in policy['Statement'])
    assert 'policy attach local spacer-bucket' in script
    assert 'policy attach local readwrite' not in script


@pytest.mark.parametrize('bind, password, refused', [
    ('127.0.0.1', PLACEHOLDER, False),
    ('0.0.0.0', PLACEHOLDER, True),
    ('10.0.0.5', f'admin:{PLACEHOLDER}', True),
    ('0.0.0.0', 'a-real-long-random-secret', False),
    ('::1', PLACEHOLDER, False),
])
def test_placeholder_passwords_are_refused_beyond_localhost(
        bind, password, refused):
    run = subprocess.run(['sh', str(SCRIPT), bind, f'SOME_PASSWORD={password}'],
                         capture_output=True, text=True, timeout=10)
    assert run.returncode == (64 if refused else 0)
    if refused:
        assert 'SOME_PASSWORD' in run.stderr and 'docs/operations.md' in \
            run.stderr


def test_redis_service_refuses_the_placeholder_when_published(compose,
                                                              tmp_path):
    argv = [local_paths(p) for p in
            compose_command(compose['services']['redis']['command'])]
    env = {'PATH': os.environ['PATH'], 'SERVICE_BIND': '0.0.0.0',
           'REDIS_PASSWORD': read_env_file(CONFIG_DIR / 'redis.env')[
               'REDIS_PASSWORD']}
    assert env['REDIS_PASSWORD'] == PLACEHOLDER
    run = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 64
    assert 'REDIS_PASSWORD' in run.stderr
    # compose passes the published address in.
    assert compose['services']['redis']['environment']['SERVICE_BIND'] == \
        '${REDIS_BIND:-127.0.0.1}'


@pytest.mark.parametrize('service, variable', [
    ('minio', 'MINIO_BIND'), ('minio-init', 'MINIO_BIND'),
    ('flower', 'FLOWER_BIND'), ('grafana', 'GRAFANA_BIND')])
def test_published_services_know_their_address(compose, service, variable):
    assert compose['services'][service]['environment']['SERVICE_BIND'] == \
        f'${{{variable}:-127.0.0.1}}'


def test_flower_refuses_the_placeholder_when_published(tmp_path):
    env = {'PATH': os.environ['PATH'], 'SERVICE_BIND': '0.0.0.0',
           'FLOWER_BASIC_AUTH': read_env_file(CONFIG_DIR / 'flower.env')[
               'FLOWER_BASIC_AUTH'],
           'WORKER_NODES_FILE': str(tmp_path / 'nodes')}
    run = subprocess.run([str(ENTRYPOINT), 'flower'], env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 64
    assert 'FLOWER_BASIC_AUTH' in run.stderr
