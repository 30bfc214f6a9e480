"""Worker metrics scraped from real workers doing real tasks, and the queue
exporter and queue view reading a real Redis: the numbers are what ran."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from spacer_worker.client import Client
from spacer_worker.data_classes import DataLocation
from spacer_worker.messages import ClassifyFeaturesMsg, TrainClassifierMsg
from spacer_worker.task_utils import SplitMode, preprocess_labels
from tests.client.helpers import extract_job, extract_msg, write_image
from tests.distributed.services import REPO, base_env, free_port, wait_for
from tests.training.conftest import random_labels


def scrape(port: int, auth: tuple[str, str] | None = None) -> dict:
    """{(name, frozenset(labels)): value} of one /metrics page."""
    response = requests.get(f'http://127.0.0.1:{port}/metrics', auth=auth,
                            timeout=10)
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = \
                sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, ls), value in samples.items()
               if n == name and wanted <= ls)


def wait_port(port: int, timeout: float = 30) -> None:
    def up() -> bool:
        try:
            requests.get(f'http://127.0.0.1:{port}/metrics', timeout=2)
            return True
        except requests.ConnectionError:
            return False
    wait_for(up, timeout, interval=0.2, what=f'metrics on port {port}')


@pytest.fixture
def metrics_env(tmp_path):
    port = free_port()
    return port, {'SPACER_METRICS_PORT': str(port),
                  'SPACER_METRICS_DIR': str(tmp_path / 'metrics')}


def test_a_host_endpoint_counts_what_its_workers_ran(
        app, start_worker, metrics_env, tmp_path):
    port, env = metrics_env
    # Two workers on one host share the endpoint: one serves both.
    start_worker('m-extract', queues='extract,train', concurrency=2, env=env)
    start_worker('m-classify', queues='classify', concurrency=1, env=env)
    wait_port(port)
    client = Client(app)

    (tmp_path / 'job').mkdir()
    images = [write_image(tmp_path / f'{i}.png', seed=i) for i in range(3)]
    extracts = [client.submit(extract_msg(
        image, tmp_path / f'{i}.fv', token=f'x{i}',
        rowcols=[(5, 5), (10, 20), (30, 40)][:i + 1]))
        for i, image in enumerate(images)]            # 1 + 2 + 3 points
    missing = client.submit(extract_msg(tmp_path / 'missing.png',
                                        tmp_path / 'm.fv', token='gone'))
    job = client.submit(extract_job(images[:2], tmp_path / 'job',
                                    token='job'))     # 2 images x 2 points
    (tmp_path / 'features').mkdir()
    labels = preprocess_labels(random_labels(tmp_path / 'features',
                                             im_count=10, points=20),
                               split_mode=SplitMode.POINTS)
    model = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    train = client.submit(TrainClassifierMsg(
        job_token='t', trainer='minibatch', nbr_epochs=4, clf_type='MLP',
        labels=labels, previous_model_locs=[], model_loc=model,
        valresult_loc=DataLocation('filesystem', str(tmp_path / 'vr.json'))))
    for handle in [*extracts, job]:
        client.result(handle, timeout=120)
    with pytest.raises(Exception, match='missing.png'):
        client.result(missing, timeout=60)
    client.result(train, timeout=120)
    feature_loc = next(iter(labels.val.keys()))
    for token in ('c1', 'c2'):    # one process: the second is a cache hit
        client.result(client.submit(ClassifyFeaturesMsg(
            job_token=token, feature_loc=feature_loc, classifier_loc=model)),
            timeout=60)

    samples = scrape(port)

    count = lambda **kw: total(samples, 'spacer_tasks_total', **kw)  # noqa: E731
    assert count(task='spacer.extract_features', outcome='success') == 3
    assert count(task='spacer.extract_features', outcome='failure',
                 error='DataNotFoundError') == 1
    assert count(task='spacer.process_job', outcome='success') == 1
    assert count(task='spacer.train_classifier', outcome='success') == 1
    assert count(task='spacer.classify_features', outcome='success',
                 queue='classify') == 2
    assert count() == 8
    # Durations: one observation per task, by task name.
    assert total(samples, 'spacer_task_duration_seconds_count',
                 task='spacer.extract_features') == 4
    assert total(samples, 'spacer_task_duration_seconds_count') == 8
    assert total(samples, 'spacer_task_duration_seconds_sum',
                 task='spacer.train_classifier') > 0
    # Extraction: images and points of the successful tasks and the job.
    assert total(samples, 'spacer_extract_images_total',
                 task='spacer.extract_features') == 3
    assert total(samples, 'spacer_extract_patches_total',
                 task='spacer.extract_features') == 6
    assert total(samples, 'spacer_extract_images_total',
                 task='spacer.process_job') == 2
    assert total(samples, 'spacer_extract_patches_total',
                 task='spacer.process_job') == 4
    assert total(samples, 'spacer_extract_seconds_total') > 0
    assert total(samples, 'spacer_training_epochs_total') == 4
    assert total(samples, 'spacer_cache_requests_total', cache='classifier',
                 result='miss') == 1
    assert total(samples, 'spacer_cache_requests_total', cache='classifier',
                 result='hit') == 1
    assert total(samples, 'spacer_tasks_in_flight') == 0


def test_the_serving_worker_hands_the_port_over(app, start_worker,
                                                metrics_env, tmp_path):
    port, env = metrics_env
    first = start_worker('m-first', queues='extract', env=env)
    wait_port(port)
    second = start_worker('m-second', queues='extract', env=env)
    assert 'Serving this host' in first.log_text()
    wait_for(lambda: 'is taken' in second.log_text(), 10, interval=0.2,
             what='the second worker to find the port taken')
    client = Client(app)
    client.result(client.submit(extract_msg(
        write_image(tmp_path / 'a.png'), tmp_path / 'a.fv')), timeout=60)
    assert total(scrape(port), 'spacer_tasks_total') == 1

    first.stop()

    wait_for(lambda: 'Serving this host' in second.log_text(), 30,
             interval=0.5, what='the second worker to serve')
    wait_port(port)
    samples = scrape(port)
    # What the stopped worker counted is still there; nothing is running.
    assert total(samples, 'spacer_tasks_total', outcome='success') == 1
    assert total(samples, 'spacer_tasks_in_flight') == 0


def test_the_queue_exporter_and_view_read_the_broker(app, broker_url,
                                                     redis_db, tmp_path):
    client = Client(app)
    for i in range(3):
        client.submit(extract_msg(tmp_path / 'a.png', tmp_path / f'{i}.fv',
                                  token=f'q{i}'),
                      priority=0 if i == 0 else None)
    client.submit(extract_msg(tmp_path / 'a.png', tmp_path / 'h.fv',
                              token='h'), queue='extract_high')
    port = free_port()
    env = base_env(broker_url, SPACER_METRICS_AUTH='prom:s3cret',
                   SPACER_CORALNET_SPEC_QUEUES='high=extract_high')
    exporter = subprocess.Popen(
        [sys.executable, '-m', 'spacer_worker.cli', 'metrics', '--port',
         str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port)
        assert requests.get(f'http://127.0.0.1:{port}/metrics',
                            timeout=5).status_code == 401
        time.sleep(1.1)
        samples = scrape(port, auth=('prom', 's3cret'))
    finally:
        exporter.terminate()
        out = exporter.communicate(timeout=10)[0]
    assert 'on http://127.0.0.1:' in out and 'basic auth' in out

    def length(queue: str, priority: str) -> float:
        return samples[('spacer_queue_length', frozenset(
            {'queue': queue, 'priority': priority}.items()))]
    assert length('extract', '0') == 1 and length('extract', '5') == 2
    assert total(samples, 'spacer_queue_length', queue='extract') == 3
    # The spec-level queue comes from the configuration, not a fixed list.
    assert total(samples, 'spacer_queue_length', queue='extract_high') == 1
    assert total(samples, 'spacer_queue_length', queue='train') == 0
    assert total(samples, 'spacer_queue_oldest_age_seconds',
                 queue='extract') >= 1.0
    assert total(samples, 'spacer_workers_alive') == 0

    view = subprocess.run(
        [sys.executable, '-m', 'spacer_worker.cli', 'status', '--queues',
         '--queue', 'extract_high'], cwd=REPO, env=base_env(broker_url),
        capture_output=True, text=True, timeout=60)
    assert view.returncode == 0, view.stderr
    rows = {line.split()[0]: line for line in view.stdout.splitlines()[2:]}
    assert re.match(r'extract\s+3\s+0: 1, 5: 2\s+\d+ s \(', rows['extract'])
    assert re.match(r'extract_high\s+1\s', rows['extract_high'])
    assert re.match(r'train\s+0\s+-\s+-', rows['train'])


def test_lease_restores_are_counted(app, start_worker, metrics_env, data_dir,
                                    redis_db):
    from tests.distributed.data import extract_msg as stored_extract_msg
    from tests.distributed.services import runs

    port, env = metrics_env
    doomed = start_worker('m-doomed', queues='extract',
                          env={'DIST_TEST_TASK_DELAY': '300'})
    result = app.send_task('spacer.extract_features', queue='extract',
                           args=[stored_extract_msg(data_dir, 'img').serialize()])
    wait_for(lambda: runs(redis_db), 30, what='the doomed worker to start it')
    start_worker('m-survivor', queues='extract', env=env)
    wait_port(port)

    doomed.kill()
    result.get(timeout=120)

    samples = scrape(port)
    assert total(samples, 'spacer_lease_restored_total') == 1
    assert total(samples, 'spacer_tasks_total', outcome='success') == 1


def test_the_queue_view_counts_the_leases_the_workers_write():
    from spacer_worker.metrics.queues import LEASE_PATTERN
    from spacer_worker.worker.leases import LEASE_KEY
    assert LEASE_PATTERN == LEASE_KEY.format('*')
