"""A real Django project (tests/django_project) uses CeleryQueue as CoralNet
would: SPACER_QUEUE_CHOICE picks it, settings.SPACER configures it, jobs are
enqueued from one process and collected by another."""

from __future__ import annotations

import time

from tests.client.helpers import write_image
from tests.services import run_django, worker_env


def test_django_app_enqueues_and_collects_through_celery(
        redis_url, celery_worker, tmp_path):
    env = worker_env(redis_url)
    # Configured the CoralNet way: settings.SPACER, not SPACER_* variables.
    del env['SPACER_BROKER_URL'], env['SPACER_RESULT_BACKEND']
    env['TEST_REDIS_URL'] = redis_url
    env['TEST_DJANGO_DB'] = str(tmp_path / 'db.sqlite3')
    image = write_image(tmp_path / 'img.png')
    run_django(env, 'migrate', '-v', '0')

    ids = run_django(env, 'submit_jobs', str(image), str(tmp_path),
                  '--count', '104', '--bad', '1')
    assert len(ids) == 105

    handled: list[int] = []
    deadline = time.monotonic() + 120
    while True:
        report = run_django(env, 'collect_jobs')
        handled += report['handled']
        if all(status != 'pending' for status, _, _ in report['jobs'].values()):
            break
        assert time.monotonic() < deadline, report['statuses']
        time.sleep(1)

    jobs = {int(k): v for k, v in report['jobs'].items()}
    assert sorted(handled) == ids, 'every job handed back exactly once'
    assert all(collections == 1 for _, _, collections in jobs.values())
    bad = ids[-1]
    assert jobs[bad][0] == 'error'
    assert 'UnknownClassError' in jobs[bad][1]
    assert {status for pk, (status, _, _) in jobs.items() if pk != bad} == \
        {'success'}
    # Nothing left: a later collection run hands back nothing again.
    final = run_django(env, 'collect_jobs')
    assert final['handled'] == [] and final['statuses'] == {}
