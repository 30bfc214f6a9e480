"""The helpers a web app's test suite uses around CeleryQueue
(spacer_worker.client.testing), against a real Redis and a real worker."""

from __future__ import annotations

import uuid

import pytest

from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.testing import clear_books, wait_for_jobs
from tests.client.helpers import extract_job, write_image


@pytest.fixture
def queue(app):
    return CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:')


def test_wait_then_clear_leaves_a_clean_slate(queue, celery_worker,
                                              redis_db, tmp_path):
    image = write_image(tmp_path / 'img.png')
    handles = [queue.submit_job(extract_job([image], tmp_path, token=str(i)),
                                i) for i in range(3)]

    wait_for_jobs(queue, timeout=60)

    # Everything finished, so one collect call hands every result back.
    assert all(s.finished for s in queue.client.statuses(handles))
    results, words = queue.collect_jobs(queue.get_collectable_jobs())
    assert sorted(words) == ['SUCCEEDED'] * 3 and len(results) == 3

    # A job still waiting (nothing consumes extract_high here): a
    # resubmission is the same job, until clear_books drops its record,
    # its result and that guard.
    job = extract_job([image], tmp_path, token='late')
    late = queue.submit_job(job, 'late', 'high')
    assert queue.submit_job(job, 'late', 'high').id == late.id
    assert clear_books(queue) == 1
    assert queue.get_collectable_jobs() == []
    assert list(redis_db.scan_iter(match=queue.prefix + '*')) == []
    assert redis_db.get(queue.client.app.backend.get_key_for_task(late.id)) \
        is None
    again = queue.submit_job(job, 'late', 'high')
    assert again.id != late.id
    assert [j.task_id for j in queue.get_collectable_jobs()] == [again.id]
    clear_books(queue)


def test_wait_names_the_jobs_nothing_runs(queue, tmp_path):
    image = write_image(tmp_path / 'img.png')
    # HIGH goes to extract_high, which no worker here consumes.
    queue.submit_job(extract_job([image], tmp_path, token='x'), 7, 'high')

    with pytest.raises(TimeoutError, match=r'job 7 .*extract_high'):
        wait_for_jobs(queue, timeout=1)
    clear_books(queue)
