"""docker/entrypoint.sh and docker/healthcheck.py with real Celery workers
on a real Redis: what a container does, without Docker.

GPUs cannot be had here; the entrypoint's documented WORKER_GPUS override
names them, and each worker's environment is read from /proc.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import CONFIG_DIR, REPO, read_env_file
from tests.services import kill_group, wait_for

ENTRYPOINT = REPO / 'docker' / 'entrypoint.sh'
HEALTHCHECK = REPO / 'docker' / 'healthcheck.py'
HOST = platform.node()   # what Celery's %h and `uname -n` give


@pytest.fixture
def container(broker_url, tmp_path):
    """Start the entrypoint as a container would; stop it at the end."""
    started: list[subprocess.Popen] = []
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'CELERY_', 'WORKER_', 'FLOWER_'))}
    env.update({
        'SPACER_BROKER_URL': broker_url,
        'SPACER_SECRETS_PATH': str(tmp_path / 'no-secrets.json'),
        'SPACER_TORCH_DEVICE': 'cpu',
        'WORKER_NODES_FILE': str(tmp_path / 'nodes'),
        'PYTHONPATH': str(REPO),
        'HEALTHCHECK_TIMEOUT': '3',
    })

    class Container:
        environment = env

        def start(self, *args: str, **extra: str) -> subprocess.Popen:
            self.log = tmp_path / 'entrypoint.log'
            proc = subprocess.Popen(
                [str(ENTRYPOINT), *args], env={**env, **extra},
                stdout=open(self.log, 'w'), stderr=subprocess.STDOUT,
                start_new_session=True)
            started.append(proc)
            return proc

        def healthcheck(self) -> subprocess.CompletedProcess:
            return subprocess.run(['python3', str(HEALTHCHECK)], env=env,
                                  capture_output=True, text=True, timeout=60)

        def inspect(self, what: str, node: str) -> dict:
            run = subprocess.run(
                ['celery', '-A', 'spacer_worker', 'inspect', what, '-d', node,
                 '-j', '--timeout', '5'],
                env=env, capture_output=True, text=True, timeout=60)
            return json.loads(run.stdout)[node]

        def wait_healthy(self, proc: subprocess.Popen) -> str:
            def healthy():
                assert proc.poll() is None, self.log.read_text()
                check = self.healthcheck()
                return check.stdout if check.returncode == 0 else None
            return wait_for(healthy, 60, what='workers answering the healthcheck')

    yield Container()
    for proc in started:
        # The whole group: pool children outlive a worker killed under them.
        kill_group(proc)
        proc.wait(10)


def worker_pids(entrypoint: subprocess.Popen) -> list[int]:
    """The celery worker parents the entrypoint started (its children)."""
    children = Path(f'/proc/{entrypoint.pid}/task/{entrypoint.pid}/children')
    return [int(pid) for pid in children.read_text().split()]


def test_worker_takes_its_name_queue_and_options_from_compose_and_config(
        container):
    """classify-worker as compose runs it, with config/classify.env."""
    options = read_env_file(CONFIG_DIR / 'classify.env')
    proc = container.start('worker', 'classify', '--queues=classify',
                           **options)
    node = f'classify@{HOST}'

    report = container.wait_healthy(proc)

    assert node in report
    stats = container.inspect('stats', node)
    concurrency = int(options['CELERY_WORKER_CONCURRENCY'])
    assert stats['pool']['max-concurrency'] == concurrency
    assert stats['prefetch_count'] == concurrency * int(
        options['CELERY_WORKER_PREFETCH_MULTIPLIER'])
    queues = container.inspect('active_queues', node)
    assert [q['name'] for q in queues] == ['classify']

    # docker stop: SIGTERM, warm shutdown, clean exit.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    check = container.healthcheck()
    assert check.returncode == 1
    assert node in check.stdout


def test_gpu_workers_run_one_single_process_worker_per_gpu(container):
    proc = container.start('gpu-workers', 'extract', '--queues=extract',
                           WORKER_GPUS='GPU-aaaa,GPU-bbbb')
    nodes = [f'extract-gpu0@{HOST}', f'extract-gpu1@{HOST}']

    report = container.wait_healthy(proc)

    for node in nodes:
        assert node in report
        assert container.inspect('stats', node)['pool']['max-concurrency'] == 1
    visible = set()
    for pid in worker_pids(proc):
        environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        visible.update(v.split(b'=', 1)[1].decode() for v in environ
                       if v.startswith(b'CUDA_VISIBLE_DEVICES='))
    assert visible == {'GPU-aaaa', 'GPU-bbbb'}

    # docker stop: every worker shuts down warm, the container exits 0.
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0


def test_gpu_workers_with_several_tasks_per_gpu_share_one_network(
        container):
    proc = container.start('gpu-workers', 'extract', '--queues=extract',
                           WORKER_GPUS='GPU-aaaa', WORKER_TASKS_PER_GPU='3')
    node = f'extract-gpu0@{HOST}'

    container.wait_healthy(proc)

    # Three pool processes on the one GPU, and the shared network server
    # that runs the network for all of them, started by the worker.
    assert container.inspect('stats', node)['pool']['max-concurrency'] == 3
    worker, = worker_pids(proc)
    environ = Path(f'/proc/{worker}/environ').read_bytes().split(b'\0')
    assert b'SPACER_EXTRACT_SHARED_NETWORK=true' in environ
    children = Path(f'/proc/{worker}/task/{worker}/children').read_text()
    commands = [Path(f'/proc/{pid}/cmdline').read_bytes()
                for pid in children.split()]
    assert sum(b'spacer_worker.extractors.runtime.shared' in c
               for c in commands) == 1
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0


def test_a_bad_tasks_per_gpu_is_refused(container):
    proc = container.start('gpu-workers', 'extract', '--queues=extract',
                           WORKER_GPUS='0', WORKER_TASKS_PER_GPU='many')
    assert proc.wait(30) == 64
    assert 'WORKER_TASKS_PER_GPU' in container.log.read_text()


def test_one_gpu_worker_dying_stops_the_container(container):
    proc = container.start('gpu-workers', 'extract', '--queues=extract',
                           WORKER_GPUS='0,1')
    container.wait_healthy(proc)
    first, second = worker_pids(proc)

    os.kill(first, signal.SIGKILL)

    # Non-zero, so Docker's restart policy brings the whole set back.
    assert proc.wait(60) != 0
    assert not Path(f'/proc/{second}').exists() or \
        Path(f'/proc/{second}/stat').read_text().split()[2] == 'Z'
    assert 'stopping the others' in container.log.read_text()
    assert container.healthcheck().returncode == 1


def test_gpu_workers_without_a_gpu_say_what_to_do(container):
    if shutil.which('nvidia-smi'):
        pytest.skip('this machine has nvidia-smi: it may list real GPUs')
    # No GPU and no nvidia-smi here: the count comes from torch (0).
    proc = container.start('gpu-workers', 'extract', '--queues=extract')
    assert proc.wait(120) == 64
    message = container.log.read_text()
    assert 'no GPU is visible' in message
    assert '--profile cpu' in message


@pytest.mark.parametrize('args, expected', [
    (['worker'], "needs a node name"),
    (['worker', '--queues=train'], "needs a node name"),
    (['worker', 'train@box', '--queues=train'], "must not contain '@'"),
    ([], 'no command given'),
])
def test_bad_usage_is_refused_with_a_reason(container, args, expected):
    proc = container.start(*args)
    assert proc.wait(30) == 64
    assert expected in container.log.read_text()


def test_other_commands_run_as_given(container):
    proc = container.start('spacer-worker', 'config')
    assert proc.wait(60) == 0
    assert 'BROKER_URL' in container.log.read_text()


def test_healthcheck_passes_where_no_worker_was_started(container):
    check = container.healthcheck()
    assert check.returncode == 0
    assert 'nothing to check' in check.stdout


def test_worker_passes_the_log_level_through(container):
    proc = container.start('worker', 'classify', '--queues=classify',
                           SPACER_LOG_LEVEL='DEBUG')
    container.wait_healthy(proc)
    # `worker` execs celery: the entrypoint's process is the worker.
    argv = Path(f'/proc/{proc.pid}/cmdline').read_bytes().split(b'\0')
    assert b'--loglevel=DEBUG' in argv
