"""The CPU profile of compose.yaml, run for real on a Docker Engine.

Images are built here without pulling anything (tests/deploy/engine.py);
Redis is Debian's redis-server running compose.yaml's own command, S3 is
moto's server (tests/deploy/compose.standins.yaml). The stack is brought up
with the documented command, then scaled, killed, restarted and upgraded
while work goes through it, and every outcome is read from the containers:
their health, their logs, their metrics endpoints, Redis.

Skips, saying why, where no Docker Engine runs (scripts/test.sh starts
dockerd when it runs as root). Set SPACER_COMPOSE_TEST=0 to skip it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy import engine
from tests.deploy.conftest import REPO

pytestmark = pytest.mark.timeout(1800)

PROJECT = 'spacer-compose-test'
PASSWORD = 'change-me-local-only'    # config/redis.env, on 127.0.0.1 only
WORKERS = ('extract-worker-cpu', 'extract-worker-high', 'train-worker',
           'train-worker-high', 'classify-worker')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Stack:
    """One compose project and the host-side client of its Redis."""

    def __init__(self, demo_dir: Path, images: dict[str, str]) -> None:
        self.demo_dir = demo_dir
        self.redis_port = _free_port()
        self.command = engine.compose_command()
        self.env = {**os.environ,
                    'COMPOSE_PROJECT_NAME': PROJECT,
                    'CPU_IMAGE': images['cpu'],
                    'REDIS_IMAGE': images['base'],
                    'S3_STANDIN_IMAGE': images['s3'],
                    'DEMO_DIR': str(demo_dir),
                    'REDIS_HOST_PORT': str(self.redis_port),
                    'MINIO_HOST_PORT': str(_free_port()),
                    'FLOWER_HOST_PORT': str(_free_port()),
                    # Warm shutdowns bounded for the test's upgrades.
                    'TRAIN_STOP_GRACE': '60s', 'EXTRACT_STOP_GRACE': '60s',
                    'CLASSIFY_STOP_GRACE': '60s'}
        self.env.pop('COMPOSE_PROFILES', None)

    def compose(self, *args: str, env: dict[str, str] | None = None,
                timeout: float = 600) -> str:
        return engine.run([*self.command, '-f', str(REPO / 'compose.yaml'),
                           '-f', str(engine.HERE / 'compose.standins.yaml'),
                           '--profile', 'cpu', *args],
                          env={**self.env, **(env or {})}, timeout=timeout,
                          cwd=REPO)

    def containers(self, service: str, running: bool = True) -> list[str]:
        args = ['docker', 'ps', '-q', '--no-trunc', '--filter',
                f'label=com.docker.compose.project={PROJECT}', '--filter',
                f'label=com.docker.compose.service={service}']
        if not running:
            args.insert(2, '-a')
        return engine.run(args).split()

    def inspect(self, container: str) -> dict:
        return json.loads(engine.run(['docker', 'inspect', container]))[0]

    def wait_healthy(self, service: str, count: int = 1,
                     timeout: float = 240) -> list[str]:
        deadline = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < deadline:
            ids = self.containers(service)
            states = [self.inspect(c)['State'].get('Health', {}).get(
                'Status', 'none') for c in ids]
            if len(ids) == count and all(s == 'healthy' for s in states):
                return ids
            time.sleep(2)
        logs = engine.run(['docker', 'logs', '--tail', '30', ids[0]]) \
            if ids else ''
        raise AssertionError(f'{service}: wanted {count} healthy, have '
                             f'{states}; last logs:\n{logs}')

    def client_env(self) -> dict[str, str]:
        base = f'redis://:{PASSWORD}@127.0.0.1:{self.redis_port}'
        # The suite's own settings (its Redis, its secrets) stay out.
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(('SPACER_', 'CELERY_'))}
        return {**inherited, 'SPACER_BROKER_URL': f'{base}/0',
                'SPACER_RESULT_BACKEND': f'{base}/1',
                'SPACER_FILESYSTEM_WRITE_ROOTS': str(self.demo_dir),
                'PYTHONPATH': str(REPO)}

    def py(self, code: str, timeout: float = 900) -> dict:
        """Run client code on the host against the stack's Redis; it
        prints one JSON object last."""
        done = subprocess.run([sys.executable, '-c', code],
                              env=self.client_env(), capture_output=True,
                              text=True, timeout=timeout, cwd=self.demo_dir,
                              preexec_fn=lambda: os.umask(0))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def metrics(self, container: str) -> str:
        networks = self.inspect(container)['NetworkSettings']['Networks']
        address = next(iter(networks.values()))['IPAddress']
        with urllib.request.urlopen(f'http://{address}:9808/metrics',
                                    timeout=10) as r:
            return r.read().decode()


def _logs(container: str) -> str:
    done = subprocess.run(['docker', 'logs', container], capture_output=True,
                          text=True)
    return done.stdout + done.stderr


@pytest.fixture(scope='module')
def stack():
    if os.environ.get('SPACER_COMPOSE_TEST') == '0':
        pytest.skip('SPACER_COMPOSE_TEST=0: the compose test is turned off')
    missing = engine.engine_missing()
    if missing:
        pytest.skip(f'no Docker Engine for the compose test: {missing}')
    started = time.monotonic()
    base = engine.base_image()
    images = {'base': base, 's3': engine.s3_image(base),
              'cpu': engine.cpu_image(base, 'spacer-worker:compose-test')}
    print(f'images ready in {time.monotonic() - started:.0f} s')
    demo_dir = Path(tempfile.mkdtemp(prefix='spacer-compose-', dir='/var/tmp'))
    demo_dir.chmod(0o777)
    s = Stack(demo_dir, images)
    s.compose('down', '-v', '--remove-orphans', timeout=300)
    try:
        s.compose('up', '-d', timeout=900)
        for service in WORKERS:
            s.wait_healthy(service)
        print(f'stack healthy after {time.monotonic() - started:.0f} s')
        yield s
    finally:
        if os.environ.get('SPACER_COMPOSE_KEEP') != '1':
            s.compose('down', '-v', '--remove-orphans', timeout=600)
            shutil.rmtree(demo_dir, ignore_errors=True)


DEMO = '''
import json, sys
from spacer_worker.cli.demo import run_demo
r = run_demo({out!r}, images={images}, points={points}, epochs=50,
             mode='broker', timeout=600)
print(json.dumps({{'ok': r.ok, 'accuracy': r.accuracy, 'mode': r.mode}}))
'''


@pytest.fixture(scope='module')
def demo(stack):
    """The README's demo, sent from the host to the containers' queues."""
    out = stack.demo_dir / 'demo'
    result = stack.py(DEMO.format(out=str(out), images=10, points=40))
    return out, result


def test_the_demo_job_runs(demo):
    out, result = demo
    assert result['mode'] == 'broker'
    assert result['ok'], result
    assert (out / 'model' / 'classifier.pkl').is_file()


CLASSIFY = '''
import json, glob
from spacer_worker.client import Client
from spacer_worker.data_classes import DataLocation
from spacer_worker.messages import ClassifyFeaturesMsg
client = Client()
features = sorted(glob.glob({out!r} + '/features/*.featurevector'))
handles = [client.submit(ClassifyFeaturesMsg(
    job_token=f'c{{i}}', feature_loc=DataLocation('filesystem', f),
    classifier_loc=DataLocation('filesystem', {out!r} + '/model/classifier.pkl')))
    for i in range({count}) for f in features[:1]]
print(json.dumps([str(h) for h in handles]))
'''

RESULTS = '''
import json
from spacer_worker.client import Client
client = Client()
out = {{}}
for h in {handles!r}:
    try:
        client.result(h, timeout={timeout})
        out[h] = 'ok'
    except Exception as e:
        out[h] = f'{{type(e).__name__}}: {{e}}'
print(json.dumps(out))
'''


def _submit_classify(stack, out: Path, count: int) -> list[str]:
    return stack.py(CLASSIFY.format(out=str(out), count=count))


def _results(stack, handles: list[str], timeout: float = 300) -> dict:
    return stack.py(RESULTS.format(handles=handles, timeout=timeout))


TRAIN = '''
import json, glob, shutil, os
from spacer_worker.client import Client
from spacer_worker.data_classes import DataLocation, ImageLabels
from spacer_worker.messages import TrainClassifierMsg
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.train_classifier import MiniBatchTrainer
from spacer_worker.data_classes import ImageFeatures
out = {out!r}
copies = os.path.join(out, 'copies')
os.makedirs(copies, exist_ok=True)
labels = {{}}
for f in sorted(glob.glob(out + '/features/*.featurevector')):
    feats = ImageFeatures.load(DataLocation('filesystem', f))
    points = [(p.row, p.col, 1 + (p.row + p.col) % 3) for p in feats.point_features]
    for k in range({copies}):
        path = os.path.join(copies, f'{{k}}-' + os.path.basename(f))
        if not os.path.exists(path):
            shutil.copy(f, path)
        labels[DataLocation('filesystem', path)] = points
client = Client()
handle = client.submit(TrainClassifierMsg(
    job_token={token!r}, trainer=MiniBatchTrainer(), nbr_epochs={epochs},
    clf_type='MLP', labels=preprocess_labels(ImageLabels(labels),
        split_ratios=(0.1, 0.1), split_mode=SplitMode.POINTS_STRATIFIED),
    previous_model_locs=[],
    model_loc=DataLocation('filesystem', out + '/{token}.pkl'),
    valresult_loc=DataLocation('filesystem', out + '/{token}.json')))
print(json.dumps(str(handle)))
'''


def _submit_training(stack, out: Path, token: str, copies: int = 1,
                     epochs: int = 5) -> str:
    return stack.py(TRAIN.format(out=str(out), token=token, copies=copies,
                                 epochs=epochs))


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + '{'):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(' ', 1)[1])
    return total


def test_scale_gives_three_healthy_replicas_each_counted_once(stack, demo):
    out, _ = demo
    stack.compose('up', '-d', '--scale', 'train-worker=3', timeout=600)
    replicas = stack.wait_healthy('train-worker', count=3)
    hostnames = set()
    for container in replicas:
        info = stack.inspect(container)
        hostname = info['Config']['Hostname']
        hostnames.add(hostname)
        # Its healthcheck pinged its own node, not another replica's.
        last = info['State']['Health']['Log'][-1]['Output']
        assert f'train@{hostname}' in last, (hostname, last)
    assert len(hostnames) == 3
    # Health and metrics state stays in each container's own /tmp, never on
    # the scratch volume the replicas share.
    shared = engine.run(['docker', 'exec', replicas[0], 'ls', '-A', '/scratch'])
    assert 'spacer-worker' not in shared, shared

    before = sum(_counter(stack.metrics(c), 'spacer_tasks_total',
                          queue='train', outcome='success') for c in replicas)
    handles = [_submit_training(stack, out, f'scale{i}') for i in range(3)]
    assert set(_results(stack, handles).values()) == {'ok'}
    after = sum(_counter(stack.metrics(c), 'spacer_tasks_total',
                         queue='train', outcome='success') for c in replicas)
    # Three trainings ran: three, not three per replica.
    assert after - before == 3


RUNNING = '''
import json, time
from spacer_worker.client import Client
client = Client()
deadline = time.monotonic() + 300
status = None
while time.monotonic() < deadline:
    status = client.status({handle!r})
    if status.progress or str(status.state) not in ('PENDING', 'JobState.PENDING'):
        break
    time.sleep(0.2)
print(json.dumps({{'state': str(status.state), 'progress': status.progress}}))
'''


def _worker_of(stack, service: str, task_id: str, timeout: float = 120) -> str:
    """The container whose worker received the task (from its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for container in stack.containers(service):
            if f'[{task_id}] received' in _logs(container):
                return container
        time.sleep(0.5)
    raise AssertionError(f'no {service} container received {task_id}')


def test_a_task_on_a_killed_container_finishes_on_another_once(stack, demo):
    out, _ = demo
    stack.compose('up', '-d', '--scale', 'train-worker=3', timeout=600)
    stack.wait_healthy('train-worker', count=3)
    handle = _submit_training(stack, out, 'killed', copies=40, epochs=100)
    task_id = handle.rpartition(':')[2]
    victim = _worker_of(stack, 'train-worker', task_id)
    running = stack.py(RUNNING.format(handle=handle))
    assert running['progress'], f'the training never reported progress: {running}'
    engine.run(['docker', 'kill', victim])

    assert _results(stack, [handle], timeout=600) == {handle: 'ok'}
    finished = [c for c in stack.containers('train-worker', running=False)
                if re.search(rf'\[{task_id}\] succeeded', _logs(c))]
    assert len(finished) == 1, f'the training finished {len(finished)} times'
    assert finished[0] != victim
    stack.compose('up', '-d', '--scale', 'train-worker=3', timeout=600)
    stack.wait_healthy('train-worker', count=3)


def test_restarting_redis_loses_nothing(stack, demo):
    out, _ = demo
    done = _submit_classify(stack, out, 3)
    assert set(_results(stack, done).values()) == {'ok'}
    # Work waiting in the queue while Redis restarts.
    stack.compose('stop', 'classify-worker', timeout=300)
    waiting = _submit_classify(stack, out, 10)
    stack.compose('restart', 'redis', timeout=300)
    stack.wait_healthy('redis')
    stack.compose('start', 'classify-worker', timeout=300)
    stack.wait_healthy('classify-worker')
    results = _results(stack, done + waiting)
    assert results == {h: 'ok' for h in done + waiting}


def test_a_rolling_upgrade_loses_no_task(stack, demo):
    out, _ = demo
    new = engine.cpu_image(stack.env['REDIS_IMAGE'],
                           'spacer-worker:compose-test-next', label='next')
    handles = _submit_classify(stack, out, 30)
    handles += [_submit_training(stack, out, f'upgrade{i}') for i in range(3)]
    for service in ('classify-worker', 'train-worker', 'train-worker-high',
                    'extract-worker-high', 'extract-worker-cpu', 'flower'):
        args = ['up', '-d', '--no-deps']
        if service == 'train-worker':
            args += ['--scale', 'train-worker=3']
        stack.compose(*args, service, env={'CPU_IMAGE': new}, timeout=600)
        if service != 'flower':
            stack.wait_healthy(service, count=3 if service == 'train-worker'
                               else 1)
        handles += _submit_classify(stack, out, 3)
    results = _results(stack, handles, timeout=600)
    assert results == {h: 'ok' for h in handles}
    expected = engine.run(['docker', 'image', 'inspect', '-f', '{{.Id}}',
                           new]).strip()
    for service in WORKERS:
        for container in stack.containers(service):
            assert stack.inspect(container)['Image'] == expected, service


def test_containers_run_read_only_non_root_without_capabilities(stack):
    services = ('redis', 'minio', 'flower', *WORKERS)
    for service in services:
        for container in stack.containers(service):
            info = stack.inspect(container)
            host = info['HostConfig']
            assert host['ReadonlyRootfs'] is True, service
            assert host['CapDrop'] == ['ALL'], service
            assert not host.get('CapAdd'), service
            assert 'no-new-privileges:true' in host['SecurityOpt'], service
            status = engine.run(['docker', 'exec', container, 'cat',
                                 '/proc/1/status'])
            fields = dict(line.split(':\t', 1) for line in status.splitlines()
                          if ':\t' in line)
            assert fields['Uid'].split()[0] != '0', f'{service} runs as root'
            for cap in ('CapPrm', 'CapEff', 'CapBnd'):
                assert int(fields[cap], 16) == 0, (service, cap, fields[cap])
            write = subprocess.run(['docker', 'exec', container, 'touch',
                                    '/usr/local/bin/x'], capture_output=True)
            assert write.returncode != 0, f'{service} could write its image'


def test_the_gpu_image_builds_and_refuses_to_start_without_a_gpu():
    """Opt-in (SPACER_COMPOSE_GPU_IMAGE=1): compose.yaml's GPU base image
    cannot be pulled here, so this builds the documented slim alternative
    (our base, TORCH_INDEX_URL empty: PyPI's CUDA torch, several GB of
    wheels) and runs it on a host without a GPU."""
    if os.environ.get('SPACER_COMPOSE_GPU_IMAGE') != '1':
        pytest.skip('the GPU image downloads several GB of CUDA wheels: set '
                    'SPACER_COMPOSE_GPU_IMAGE=1 to build it')
    missing = engine.engine_missing()
    if missing:
        pytest.skip(f'no Docker Engine: {missing}')
    base = engine.base_image()
    tag = 'spacer-worker:compose-test-gpu'
    engine.run(['docker', 'build', '--network', 'host', '-q', '-t', tag,
                '--build-arg', f'BASE_IMAGE={base}', '--build-arg',
                'TORCH_INDEX_URL=', '--build-arg', 'EXTRAS=gpu', '-f',
                str(REPO / 'docker' / 'Dockerfile'), str(REPO)], timeout=3600)
    version = engine.run(['docker', 'run', '--rm', '--entrypoint', 'python',
                          tag, '-c', 'import torch; print(torch.__version__)'])
    assert version.startswith('2.13.0')
    done = subprocess.run(['docker', 'run', '--rm', '--read-only',
                           '--cap-drop', 'ALL', tag, 'gpu-workers', 'extract'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 64
    assert 'no GPU is visible in this container' in done.stderr
