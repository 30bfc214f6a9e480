"""compose.yaml and config/ agree with the code they deploy.

A queue name, a setting or a password that drifts between the compose file,
its env files and spacer_worker fails here, not on a production host where
a worker would silently consume nothing or ignore a setting.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.deploy.conftest import (
    COMPOSE_FILE,
    CONFIG_DIR,
    REPO,
    read_env_file,
    service_env,
)

WORKER_COMMANDS = ('worker', 'gpu-workers')
SCALABLE = ('train-worker', 'classify-worker', 'extract-worker-cpu')

# Variables that are neither spacer_worker settings nor Celery/Flower
# options, each read by the program named (docs/operations.md lists them).
OTHER_VARIABLES = {
    'REDIS_PASSWORD': 'redis service command and healthcheck',
    'MINIO_ROOT_USER': 'MinIO server and minio-init',
    'MINIO_ROOT_PASSWORD': 'MinIO server and minio-init',
    'S3_BUCKET': 'minio-init (bucket to create)',
    'WORKER_GPUS': 'docker/entrypoint.sh gpu-workers',
    'WORKER_TASKS_PER_GPU': 'docker/entrypoint.sh gpu-workers',
    'TMPDIR': 'Python tempfile: where a training spills a matrix too big for RAM',
    'WORKER_NODES_FILE': 'docker/entrypoint.sh and docker/healthcheck.py',
    'HEALTHCHECK_TIMEOUT': 'docker/healthcheck.py',
    'CELERY_APP': 'celery -A (docker/entrypoint.sh)',
    # Grafana (monitoring profile), config/grafana.env.
    'GF_SECURITY_ADMIN_USER': 'Grafana',
    'GF_SECURITY_ADMIN_PASSWORD': 'Grafana',
    'GF_USERS_ALLOW_SIGN_UP': 'Grafana',
    'GF_AUTH_ANONYMOUS_ENABLED': 'Grafana',
    'GF_ANALYTICS_REPORTING_ENABLED': 'Grafana',
    'GF_ANALYTICS_CHECK_FOR_UPDATES': 'Grafana',
    'GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH': 'Grafana',
    'REMAP_SIGTERM': 'celery worker: SIGTERM starts the soft shutdown',
    'SERVICE_BIND': 'docker/refuse-placeholders.sh (the published address)',
    'MC_CONFIG_DIR': 'mc (minio-init): its config in the writable /tmp',
}
# Celery reads these before its configuration: they would override
# SPACER_BROKER_URL / SPACER_RESULT_BACKEND without a word.
FORBIDDEN = {'CELERY_BROKER_URL', 'CELERY_RESULT_BACKEND',
             'CELERY_BROKER_READ_URL', 'CELERY_BROKER_WRITE_URL'}


def routed_queues() -> set[str]:
    """Queue names the Celery routing sends tasks to (default settings)."""
    from spacer_worker.celery import queue_name
    from spacer_worker.constants import QueueKind
    return {queue_name(kind) for kind in QueueKind}


def extract_queues() -> set[str]:
    from spacer_worker.celery import queue_name
    from spacer_worker.constants import QueueKind
    return {queue_name(QueueKind.EXTRACT), queue_name(QueueKind.EXTRACT_HIGH)}


def command_queues(command: list[str]) -> set[str]:
    """Queues named by --queues=a,b / --queues a,b / -Q a,b / -Qa,b."""
    queues: set[str] = set()
    for i, arg in enumerate(command):
        if arg.startswith('--queues='):
            value = arg.split('=', 1)[1]
        elif arg in ('--queues', '-Q'):
            value = command[i + 1]
        elif arg.startswith('-Q'):
            value = arg[2:]
        else:
            continue
        queues.update(q.strip() for q in value.split(',') if q.strip())
    return queues


def workers(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose['services'].items()
            if (svc.get('command') or [None])[0] in WORKER_COMMANDS}


def services_in(compose: dict, profiles: set[str]) -> set[str]:
    """Services `docker compose --profile ...` starts."""
    return {name for name, svc in compose['services'].items()
            if not svc.get('profiles') or set(svc['profiles']) & profiles}


def celery_worker_options() -> set[str]:
    from celery.bin.worker import worker
    return {param.name for param in worker.params}


def flower_options() -> set[str]:
    import flower.options  # noqa: F401  (defines the options)
    from tornado.options import options
    return {name.replace('-', '_') for name in options._options}


def test_every_worker_consumes_queues_the_routing_defines(compose):
    known = routed_queues()
    found = workers(compose)
    assert set(found) == {'extract-worker', 'extract-worker-cpu',
                          'extract-worker-high', 'train-worker',
                          'train-worker-high', 'classify-worker'}
    for name, svc in found.items():
        queues = command_queues(svc['command'])
        assert queues, f'{name} names no queue: {svc["command"]}'
        assert queues <= known, (
            f'{name} consumes {sorted(queues - known)}, which no task is '
            f'routed to (routing: {sorted(known)})')


@pytest.mark.parametrize('profiles', [set(), {'gpu'}, {'cpu'}])
def test_each_profile_serves_the_queues_it_promises(compose, profiles):
    running = services_in(compose, profiles)
    consumed = {q for name, svc in workers(compose).items() if name in running
                for q in command_queues(svc['command'])}
    # Extraction needs a profile (gpu or cpu); the rest always runs.
    expected = routed_queues() - (extract_queues() if not profiles else set())
    assert consumed == expected


def test_profiles_pick_the_extraction_worker(compose):
    base = {'redis', 'minio', 'minio-init', 'train-worker', 'classify-worker',
            'train-worker-high', 'flower'}
    assert services_in(compose, set()) == base
    assert services_in(compose, {'gpu'}) == base | {'extract-worker',
                                                    'extract-worker-high'}
    assert services_in(compose, {'cpu'}) == base | {'extract-worker-cpu',
                                                    'extract-worker-high'}


def test_workers_have_distinct_node_names_and_scale(compose):
    names = [svc['command'][1] for svc in workers(compose).values()]
    assert len(names) == len(set(names)), names
    for name in SCALABLE:
        svc = compose['services'][name]
        # Any of these pins one container; --scale then fails or the
        # replicas share a Celery node name Flower cannot tell apart.
        for key in ('container_name', 'hostname', 'ports'):
            assert key not in svc, f'{name} sets {key}: --scale would break'


def test_only_the_gpu_worker_reserves_gpus_and_runs_one_process_per_gpu(
        compose):
    for name, svc in compose['services'].items():
        devices = (svc.get('deploy', {}).get('resources', {})
                   .get('reservations', {}).get('devices', []))
        if name == 'extract-worker':
            assert svc['command'][0] == 'gpu-workers'
            assert [d['capabilities'] for d in devices] == [['gpu']]
        else:
            assert not devices, f'{name} reserves a GPU'


def _check_variable(name: str, value: str, service: str, monkeypatch):
    from spacer_worker import config
    assert name not in FORBIDDEN, (
        f'{service} sets {name}, which overrides the SPACER_ broker settings')
    if name.startswith('SPACER_'):
        setting = name.removeprefix('SPACER_')
        if setting == 'SECRETS_PATH':
            return
        assert setting in config.SETTINGS, (
            f'{service}: {name} is not a spacer_worker setting '
            f'(known: {", ".join(sorted(config.SETTINGS))})')
        monkeypatch.setenv(name, value)
        config.lookup(setting)   # raises ConfigError on a bad value
        monkeypatch.delenv(name)
    elif name.startswith('CELERY_WORKER_'):
        option = name.removeprefix('CELERY_WORKER_').lower()
        assert option in celery_worker_options(), (
            f'{service}: {name} is not a `celery worker` option')
    elif name.startswith('FLOWER_'):
        option = name.removeprefix('FLOWER_').lower()
        assert option in flower_options(), (
            f'{service}: {name} is not a Flower option')
    else:
        assert name in OTHER_VARIABLES, (
            f'{service}: {name} is read by nothing we know of; document it '
            f'in OTHER_VARIABLES and docs/operations.md or remove it')


def test_every_variable_set_is_one_something_reads(compose, monkeypatch):
    for service, svc in compose['services'].items():
        for name, value in service_env(svc).items():
            _check_variable(name, value, service, monkeypatch)


def test_commented_examples_in_env_files_are_real_settings(monkeypatch):
    """`# SPACER_X=value` lines document settings: they must exist too."""
    example = re.compile(r'^#\s*((?:SPACER|CELERY_WORKER|FLOWER)_[A-Z0-9_]+)'
                         r'=(\S*)\s*$')
    found = 0
    for path in sorted(CONFIG_DIR.glob('*.env')):
        for line in path.read_text().splitlines():
            match = example.match(line)
            if match:
                found += 1
                _check_variable(match[1], match[2], path.name, monkeypatch)
    assert found > 0


def test_every_env_file_exists_and_is_used(compose):
    used = set()
    for svc in compose['services'].values():
        for name in svc.get('env_file') or []:
            assert (REPO / name).is_file(), f'{name} is missing'
            used.add((REPO / name).resolve())
    unused = {p.resolve() for p in CONFIG_DIR.glob('*.env')} - used
    assert not unused, f'env files no service reads: {sorted(unused)}'


def test_redis_password_and_hosts_agree(compose):
    password = read_env_file(CONFIG_DIR / 'redis.env')['REDIS_PASSWORD']
    spacer = read_env_file(CONFIG_DIR / 'spacer.env')
    for key in ('SPACER_BROKER_URL', 'SPACER_RESULT_BACKEND'):
        url = urlsplit(spacer[key])
        assert url.scheme == 'redis'
        assert url.hostname == 'redis' and 'redis' in compose['services']
        assert url.password == password, (
            f'{key} in config/spacer.env does not use REDIS_PASSWORD of '
            f'config/redis.env: workers could not log in')
    endpoint = urlsplit(spacer['SPACER_S3_ENDPOINT_URL'])
    assert endpoint.hostname in compose['services']
    # MinIO refuses secret keys shorter than 8 characters.
    assert len(spacer['SPACER_AWS_SECRET_ACCESS_KEY']) >= 8


def test_every_compose_variable_has_a_default_and_a_comment():
    text = COMPOSE_FILE.read_text()
    header = text.split('\nx-', 1)[0]
    body = '\n'.join(line for line in text.splitlines()
                     if not line.lstrip().startswith('#'))
    # ${NAME...} not preceded by a second $ ($$ escapes a shell variable).
    uses = re.findall(r'(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}', body)
    assert uses
    for name, rest in uses:
        assert rest.startswith(':-'), f'${{{name}}} has no default'
        assert re.search(rf'\b{name}\b', header), (
            f'{name} is not explained in the header of compose.yaml')


def test_example_secrets_file_holds_only_settings(monkeypatch):
    """config/secrets.example.json, mounted as SPACER_SECRETS_PATH, is
    read by spacer_worker.config for every key it holds."""
    import json

    from spacer_worker import config
    path = CONFIG_DIR / 'secrets.example.json'
    data = json.loads(path.read_text())
    assert set(data) <= set(config.SETTINGS), set(data) - set(config.SETTINGS)
    monkeypatch.setenv('SPACER_SECRETS_PATH', str(path))
    config.reload()
    for name, value in data.items():
        assert config.lookup(name) == (value, f'secrets file ({path})')
    # An env var, even from config/spacer.env, wins over the file.
    monkeypatch.setenv('SPACER_BROKER_URL', 'redis://elsewhere:6379/0')
    assert config.get('BROKER_URL') == 'redis://elsewhere:6379/0'
