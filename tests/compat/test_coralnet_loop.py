"""CoralNet's own terms: a Django project collecting like CoralNet does
(tests/django_project: SPACER_QUEUE_CHOICE, the last line of
error_message, user errors sorted from admin errors by class path) gets
the class it expects for every failure, each run by real workers.
"""

from __future__ import annotations

import time

from spacer_worker.client.jobs import Client
from tests.compat.test_failure_classes import http_root  # noqa: F401
from tests.services import (
    CONTROL_WITH_ADD_CONSUMER,
    django_env,
    run_django,
    wait_for,
)

EXPECTED = {
    # scenario: (class path on the last line, how CoralNet sorts it)
    'bad_url': ('spacer.exceptions.URLDownloadError', 'user'),
    'not_an_image': ('PIL.UnidentifiedImageError', 'user'),
    'too_many_points': ('spacer.exceptions.DataLimitError', 'user'),
    'bad_row_column': ('spacer.exceptions.RowColumnInvalidError', 'user'),
    'stale_features': ('spacer.exceptions.RowColumnMismatchError',
                       'reset features'),
    'lost': ('spacer_worker.exceptions.ResultLostError', 'admin'),
    'revoked': ('celery.exceptions.TaskRevokedError', 'admin'),
}


def test_coralnet_sorts_every_failure_by_its_class(
        app, broker_url, redis_db, start_worker, tmp_path,
        http_root):  # noqa: F811
    data = tmp_path / 'data'
    data.mkdir()
    sandbox = {'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
               'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path),
               'SPACER_URL_ALLOWED_HOSTS': '127.0.0.1',
               # The test opens train_high later by remote control.
               'SPACER_WORKER_CONTROL_COMMANDS': CONTROL_WITH_ADD_CONSUMER}
    start_worker('coralnet', queues='extract,train,classify,extract_high',
                 concurrency=2, env=sandbox)
    env = django_env(broker_url, tmp_path)   # settings.SPACER, as CoralNet
    run_django(env, 'migrate', '-v', '0')
    jobs = run_django(env, 'submit_scenarios', str(data), http_root)

    # Lost: the job ran, then the result backend lost its record.
    lost_key = app.backend.get_key_for_task(jobs['lost'][1])
    wait_for(lambda: b'SUCCESS' in (redis_db.get(lost_key) or b''), 60,
             what='the lost job to finish')
    redis_db.delete(lost_key)
    # Revoked: cancelled while queued; then its queue gets a consumer.
    Client(app).cancel(jobs['revoked'][1])
    time.sleep(0.5)
    app.control.add_consumer('train_high', reply=True, timeout=5)

    deadline = time.monotonic() + 120
    while True:
        report = run_django(env, 'collect_jobs')
        if all(job['status'] != 'pending'
               for job in report['sorted'].values()):
            break
        assert time.monotonic() < deadline, report['sorted']
        time.sleep(0.5)

    by_name = {job['name']: job for job in report['sorted'].values()}
    assert by_name['ok']['status'] == 'success'
    admin = []
    for name, (error_class, sort) in EXPECTED.items():
        job = by_name[name]
        assert job['status'] == 'error', (name, job)
        assert job['error_class'] == error_class, (name, job)
        assert job['user_error'] is (sort == 'user'), (name, job)
        assert job['features_reset'] is (sort == 'reset features'), (name, job)
        if sort == 'admin':
            admin.append(error_class.rsplit('.', 1)[1])
    # Only the admin errors were logged and mailed.
    assert sorted(kind for kind, _ in report['error_logs']) == sorted(admin)
    # Django's file backend writes a process's messages into one file.
    mail = ''.join(p.read_text() for p in (tmp_path / 'mail').iterdir()) \
        if (tmp_path / 'mail').exists() else ''
    subjects = [line for line in mail.splitlines()
                if line.startswith('Subject: ')]
    assert len(subjects) == len(admin), subjects
    assert all('Spacer job failed: ' in line for line in subjects)


def test_a_job_out_of_time_ends_in_a_classifiable_line(app, start_worker,
                                                       tmp_path):
    from spacer_worker.client.coralnet import CeleryQueue
    from spacer_worker.exceptions import failures
    from tests.compat.test_failure_classes import _stale_training_job
    from tests.training.conftest import random_labels

    start_worker('slow', queues='train', env={
        'SPACER_TRAIN_TIME_LIMIT': '2',
        'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path)})
    job = _stale_training_job(tmp_path)
    msg = job.tasks[0]
    # A training that is fine but far too long for 2 s.
    from spacer_worker.task_utils import SplitMode, preprocess_labels
    (tmp_path / 'ok').mkdir()
    msg.labels = preprocess_labels(random_labels(tmp_path / 'ok', im_count=40,
                                                 points=200),
                                   split_mode=SplitMode.POINTS)
    msg.nbr_epochs, msg.clf_type = 500, 'MLP'    # MAX_EPOCHS allows 500
    queue = CeleryQueue(app)
    queue.submit_job(job, 1)
    deadline = time.monotonic() + 60
    results = []
    while not results:
        assert time.monotonic() < deadline, 'no result in 60 s'
        results, _ = queue.collect_jobs(queue.get_collectable_jobs())
        time.sleep(0.5)
    assert not results[0].ok
    assert failures.error_class(results[0].error_message) == \
        failures.SOFT_TIME_LIMIT, results[0].error_message
