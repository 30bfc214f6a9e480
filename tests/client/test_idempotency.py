"""Idempotent submission against a real Redis: the same (task, job token)
or the same idempotency key, while the earlier job is pending or running,
is one job however many submitters race."""

from __future__ import annotations

import threading
import uuid

import pytest

from spacer_worker.celery import PRIORITY_STEPS, create_app
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import Client
from tests.client.helpers import extract_job, extract_msg, write_image


def waiting(app, queue: str) -> int:
    """Messages in ``queue`` over all its priority lists (kombu's keys)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        redis = channel.client
        return sum(redis.llen(channel._q_for_pri(queue, p))
                   for p in PRIORITY_STEPS)


@pytest.fixture
def queue() -> str:
    # A queue no worker consumes: jobs stay pending.
    return f'idem-{uuid.uuid4().hex[:8]}'


@pytest.fixture
def token() -> str:
    return f'img-{uuid.uuid4().hex[:8]}'


def test_twenty_concurrent_submitters_get_one_job(redis_url, queue, token,
                                                  tmp_path):
    msg = extract_msg(tmp_path / 'a.png', tmp_path / 'a.fv', token=token)
    apps = [create_app(set_as_current=False, broker_url=redis_url,
                       result_backend=redis_url) for _ in range(20)]
    clients = [Client(app) for app in apps]
    for client in clients:     # connect first, so they really start at once
        client.app.backend.client.ping()
    start = threading.Barrier(len(clients))
    handles, errors = [], []

    def submit(client: Client) -> None:
        try:
            start.wait(timeout=10)
            handles.append(client.submit(msg, queue=queue))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(handles) == 20
    assert len({h.id for h in handles}) == 1
    assert waiting(apps[0], queue) == 1
    for app in apps:
        app.close()


def test_an_explicit_key_dedupes_different_messages(app, queue, tmp_path):
    client = Client(app)
    key = f'upload-{uuid.uuid4()}'
    first = client.submit(extract_msg(tmp_path / 'a.png', tmp_path / 'a.fv',
                                      token='one'), queue=queue,
                          idempotency_key=key)
    second = client.submit(extract_msg(tmp_path / 'b.png', tmp_path / 'b.fv',
                                       token='two'), queue=queue,
                           idempotency_key=key)
    other = client.submit(extract_msg(tmp_path / 'b.png', tmp_path / 'b.fv',
                                      token='two'), queue=queue)

    assert second == first
    assert other.id != first.id
    assert waiting(app, queue) == 2


def test_a_finished_job_is_submitted_anew(app, celery_worker, token,
                                          tmp_path, monkeypatch):
    client = Client(app)
    image = write_image(tmp_path / 'a.png')
    msg = extract_msg(image, tmp_path / 'a.fv', token=token)
    first = client.submit(msg)
    client.result(first, timeout=60)

    again = client.submit(msg)
    assert again.id != first.id
    client.result(again, timeout=60)

    # SUBMIT_DEDUPE=all: a finished job is the answer too.
    monkeypatch.setenv('SPACER_SUBMIT_DEDUPE', 'all')
    assert client.submit(msg) == again


def test_off_sends_every_submission(app, queue, token, tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_SUBMIT_DEDUPE', 'off')
    client = Client(app)
    msg = extract_msg(tmp_path / 'a.png', tmp_path / 'a.fv', token=token)

    handles = {client.submit(msg, queue=queue).id for _ in range(3)}

    assert len(handles) == 3 and waiting(app, queue) == 3


def test_a_failed_send_leaves_no_claim(app, queue, token, tmp_path):
    client = Client(app)
    msg = extract_msg(tmp_path / 'a.png', tmp_path / 'a.fv', token=token)
    seen = []

    def refuse(handle):
        seen.append(handle)
        raise ConnectionError('broker went away')

    with pytest.raises(ConnectionError):
        client.submit(msg, queue=queue, before_send=refuse)

    # Nothing left behind: no record, no claim, no message; a retry sends.
    assert client.status(seen[0]).state == 'LOST'
    assert waiting(app, queue) == 0
    handle = client.submit(msg, queue=queue)
    assert handle.id != seen[0].id and waiting(app, queue) == 1


def test_the_window_is_a_setting(app, queue, token, tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_SUBMIT_DEDUPE_WINDOW', '1')
    client = Client(app)
    msg = extract_msg(tmp_path / 'a.png', tmp_path / 'a.fv', token=token)
    first = client.submit(msg, queue=queue)
    redis = app.backend.client
    keys = redis.keys('spacer:submit:*')
    assert any(0 < redis.pttl(k) <= 1000 for k in keys)

    monkeypatch.setenv('SPACER_SUBMIT_DEDUPE_WINDOW', '0')
    with pytest.raises(Exception, match='SUBMIT_DEDUPE_WINDOW'):
        client.submit(extract_msg(tmp_path / 'b.png', tmp_path / 'b.fv'),
                      queue=queue)
    assert first.id


def test_celery_queue_keeps_one_job_per_resubmission(app, token, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES',
                       f'medium=idem-coralnet-{token}')
    images = [write_image(tmp_path / f'{i}.png', seed=i) for i in range(2)]
    job = extract_job(images, tmp_path, token=token)
    queue = CeleryQueue(app, prefix=f'spacer:test:{token}:')

    first = queue.submit_job(job, job_id=7, spec_level='medium')
    again = queue.submit_job(job, job_id=7, spec_level='medium')

    assert again == first
    assert [j.task_id for j in queue.get_collectable_jobs()] == [first.id]
    assert waiting(app, f'idem-coralnet-{token}') == 1
