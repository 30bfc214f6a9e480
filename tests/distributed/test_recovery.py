"""Redis restarts and cancellation, with real processes."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.messages import ExtractFeaturesReturnMsg
from tests.builders import ROWCOLS, extract_msg
from tests.services import LEASE_TTL, RedisServer, Worker, runs, wait_for


@pytest.fixture
def own_redis(tmp_path):
    """A Redis this test may restart without disturbing the others."""
    server = RedisServer(tmp_path / 'redis')
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def test_workers_reconnect_after_redis_restart(own_redis, tmp_path, data_dir):
    from spacer_worker.celery import create_app

    url = own_redis.url(0)
    app = create_app(set_as_current=False, broker_url=url, result_backend=url)
    worker = Worker('w', url, tmp_path, queues='extract',
                    env={'SPACER_LEASE_TTL': LEASE_TTL,
                         'DIST_TEST_TASK_DELAY': '0.5'}).start()
    try:
        msgs = [extract_msg(data_dir, f'img{i}', seed=i) for i in range(8)]
        ids = [str(uuid.uuid4()) for _ in msgs]
        for msg, task_id in zip(msgs, ids, strict=True):
            app.send_task('spacer.extract_features', args=[msg.serialize()],
                          queue='extract', task_id=task_id)
        client = own_redis.client()
        wait_for(lambda: len(runs(client)) >= 2, 30, what='tasks running')

        # When Redis restarts mid-run (AOF keeps the queue)
        own_redis.restart(down_for=2)

        # Then the worker reconnects and every queued task still runs
        for task_id in ids:
            ExtractFeaturesReturnMsg.deserialize(
                app.AsyncResult(task_id).get(timeout=90))
        for msg in msgs:
            assert ImageFeatures.load(msg.feature_loc).npoints == len(ROWCOLS)
        # (and it really was cut off)
        assert 'Connection to broker lost' in worker.log_text()
    finally:
        worker.stop()
        app.close()


def test_revoke_a_queued_and_a_running_task(app, start_worker, data_dir,
                                            redis_db):
    start_worker('w', queues='extract',
                 env={'DIST_TEST_TASK_DELAY': '20'})
    running = app.send_task('spacer.extract_features',
                            args=[extract_msg(data_dir, 'a').serialize()],
                            queue='extract')
    queued = app.send_task('spacer.extract_features',
                           args=[extract_msg(data_dir, 'b').serialize()],
                           queue='extract')
    wait_for(lambda: [r for r in runs(redis_db) if r['id'] == running.id],
             30, what='first task running')

    # When both are cancelled, the running one with terminate
    app.control.revoke(queued.id)
    started = time.monotonic()
    app.control.revoke(running.id, terminate=True, signal='SIGTERM')

    # Then the running one stops well before its 20 s of work
    wait_for(lambda: running.state == 'REVOKED', 15, what='running revoked')
    assert time.monotonic() - started < 15
    # and the queued one never runs
    wait_for(lambda: queued.state == 'REVOKED', 15, what='queued revoked')
    assert queued.id not in {r['id'] for r in runs(redis_db)}
    assert not (data_dir / 'b.featurevector').exists()
    # and neither comes back
    wait_for(lambda: redis_db.hlen('unacked') == 0, 15, what='all acked')
    assert redis_db.llen('extract') == 0
