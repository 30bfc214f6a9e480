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

from spacer_worker.client.jobs import Client
from spacer_worker.data_classes import DataLocation
from spacer_worker.messages import ClassifyFeaturesMsg, TrainClassifierMsg
from spacer_worker.task_utils import SplitMode, preprocess_labels
from tests.builders import random_labels
from tests.client.helpers import extract_job, extract_msg, write_image
from tests.services import REPO, base_env, free_port, wait_for


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


def scrape_after(port: int, tasks: int, timeout: float = 30) -> dict:
    """A scrape once ``tasks`` tasks have ended: a worker counts a task just
    after storing its result, so a client may see the result first."""
    def ended() -> dict | None:
        samples = scrape(port)
        done = total(samples, 'spacer_task_duration_seconds_count') + \
            total(samples, 'spacer_tasks_total', outcome='revoked')
        return samples if done >= tasks else None
    return wait_for(ended, timeout, interval=0.2,
                    what=f'{tasks} tasks counted on port {port}')


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

    samples = scrape_after(port, 8)

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
    # Bound to the loopback interface unless METRICS_BIND says otherwise.
    assert f'on http://127.0.0.1:{port}/metrics' in first.log_text()
    wait_for(lambda: 'is taken' in second.log_text(), 10, interval=0.2,
             what='the second worker to find the port taken')
    client = Client(app)
    client.result(client.submit(extract_msg(
        write_image(tmp_path / 'a.png'), tmp_path / 'a.fv')), timeout=60)
    assert total(scrape_after(port, 1), 'spacer_tasks_total') == 1

    first.stop()

    wait_for(lambda: 'Serving this host' in second.log_text(), 30,
             interval=0.5, what='the second worker to serve')
    wait_port(port)
    samples = scrape_after(port, 1)
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
    from tests.builders import extract_msg as stored_extract_msg
    from tests.services import runs

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

    samples = scrape_after(port, 1)
    assert total(samples, 'spacer_lease_restored_total') == 1
    assert total(samples, 'spacer_tasks_total', outcome='success') == 1


def test_the_queue_view_counts_the_leases_the_workers_write():
    from spacer_worker.celery.queues import LEASE_PATTERN
    from spacer_worker.worker.leases import LEASE_KEY
    assert LEASE_PATTERN == LEASE_KEY.format('*')


def test_prometheus_answers_every_dashboard_query_from_real_workers(
        app, broker_url, start_worker, metrics_env, tmp_path):
    """Debian's Prometheus scrapes a real worker and the exporter; every
    query of docs/grafana/spacer-worker.json and every alert rule runs."""
    import json
    import shutil

    prometheus = shutil.which('prometheus')
    if prometheus is None:
        import os
        message = 'prometheus is not installed (apt-get install prometheus)'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    port, env = metrics_env
    start_worker('m-dash', queues='extract,train,classify', env=env)
    exporter_port, web_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [sys.executable, '-m', 'spacer_worker.cli', 'metrics', '--port',
         str(exporter_port)], cwd=REPO, env=base_env(broker_url),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    rules = REPO / 'config' / 'prometheus' / 'alerts.yml'
    (tmp_path / 'prometheus.yml').write_text(json.dumps({
        'global': {'scrape_interval': '1s', 'evaluation_interval': '1s'},
        'rule_files': [str(rules)],
        'scrape_configs': [
            {'job_name': 'spacer-workers',
             'static_configs': [{'targets': [f'127.0.0.1:{port}']}]},
            {'job_name': 'spacer-queues',
             'static_configs': [{'targets': [f'127.0.0.1:{exporter_port}']}]},
        ]}))
    server = subprocess.Popen(
        [prometheus, f'--config.file={tmp_path / "prometheus.yml"}',
         f'--storage.tsdb.path={tmp_path / "tsdb"}',
         f'--web.listen-address=127.0.0.1:{web_port}'],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    api = f'http://127.0.0.1:{web_port}/api/v1'
    try:
        def query(expr: str) -> list:
            answer = requests.get(f'{api}/query', params={'query': expr},
                                  timeout=10).json()
            assert answer['status'] == 'success', (expr, answer)
            return answer['data']['result']

        def both_up() -> bool:
            try:
                return len(query('up == 1')) == 2
            except (requests.ConnectionError, ValueError):
                return False    # not listening, or not ready (503)
        # Tasks run once Prometheus sees the targets, so rates see them.
        wait_for(both_up, 60, interval=0.5,
                 what='Prometheus to scrape the worker and the exporter')
        client = Client(app)

        def fail(token: str) -> None:
            with pytest.raises(Exception, match='missing'):
                client.result(client.submit(extract_msg(
                    tmp_path / 'missing.png', tmp_path / 'm.fv',
                    token=token)), timeout=60)
        # An error class's series starts at its first failure: one first,
        # so that the next is a rise Prometheus sees.
        fail('dm1')
        wait_for(lambda: query('spacer_tasks_total{outcome="failure"}'), 30,
                 interval=0.5, what='Prometheus to see the first failure')
        image = write_image(tmp_path / 'a.png')
        for i in range(3):
            client.result(client.submit(extract_msg(
                image, tmp_path / f'{i}.fv', token=f'd{i}')), timeout=60)
        fail('dm2')
        wait_for(lambda: query('increase(spacer_tasks_total'
                               '{outcome="failure"}[1m]) > 0'), 60,
                 interval=0.5, what='Prometheus to see the tasks')

        board = json.loads((REPO / 'docs' / 'grafana' /
                            'spacer-worker.json').read_text())
        answers = {panel['title']: [query(t['expr'])
                                    for t in panel['targets']]
                   for panel in board['panels']}
    finally:
        server.terminate()
        exporter.terminate()
        server.wait(10)
        exporter.wait(10)

    def values(title: str) -> dict:
        return {json.dumps(r['metric'], sort_keys=True): float(r['value'][1])
                for r in answers[title][0]}
    assert list(values('Workers alive').values()) == [1.0]
    assert list(values('Worker hosts up').values()) == [1.0]
    from spacer_worker.celery.queues import known_queues
    assert set(values('Queue depth')) == {
        json.dumps({'queue': q}) for q in known_queues()}
    assert {'extract', 'train', 'classify'} <= set(known_queues())
    assert values('Throughput (tasks/s)')[
        json.dumps({'task': 'spacer.extract_features'})] > 0
    assert json.dumps({'error': 'DataNotFoundError'}) in \
        values('Failures by error class')
    for title in ('Task latency p50', 'Task latency p99'):
        assert json.dumps({'task': 'spacer.extract_features'}) in values(title)
    assert sum(values('Extraction: images/s and patches/s').values()) > 0
    # The broker's memory, from the exporter.
    assert all(v > 0 for v in values('Redis memory').values())
    assert values('Redis memory')


def test_a_task_cancelled_while_running_is_counted_and_not_in_flight(
        app, start_worker, metrics_env, tmp_path, redis_db):
    from spacer_worker.client.jobs import JobState
    from tests.services import runs

    port, env = metrics_env
    start_worker('m-slow', queues='extract',
                 env={'DIST_TEST_TASK_DELAY': '300', **env})
    wait_port(port)
    client = Client(app)
    handle = client.submit(extract_msg(write_image(tmp_path / 'a.png'),
                                       tmp_path / 'a.fv'))
    wait_for(lambda: runs(redis_db), 30, what='the task to start')
    wait_for(lambda: total(scrape(port), 'spacer_tasks_in_flight') == 1, 10,
             interval=0.2, what='the task to be in flight')

    client.cancel(handle, terminate=True)

    wait_for(lambda: client.status(handle).state is JobState.REVOKED, 30,
             interval=0.2, what='the task to be revoked')
    # The killed pool process's in-flight count went with it.
    wait_for(lambda: total(scrape(port), 'spacer_tasks_in_flight') == 0, 10,
             interval=0.2, what='nothing in flight')
    samples = scrape_after(port, 1)
    assert total(samples, 'spacer_tasks_total', outcome='revoked',
                 task='spacer.extract_features') == 1
    assert total(samples, 'spacer_tasks_total', outcome='success') == 0
