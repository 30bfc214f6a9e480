"""The queue view reads a real Redis broker: lengths per priority, and the
oldest message's age, read from the end of a large message."""

from __future__ import annotations

import time
import uuid

from spacer_worker.celery.queues import broker_redis, read_broker


def test_lengths_and_the_oldest_large_message(app):
    queue = f'view-{uuid.uuid4().hex[:8]}'
    sent_at = time.time() - 120
    big = {'job_token': 'big', 'labels': 'x' * 5_000_000}
    oldest = app.send_task('spacer.train_classifier', args=[big], queue=queue,
                           priority=5, headers={'spacer_sent_at': sent_at})
    app.send_task('spacer.train_classifier', args=[{'job_token': 'b'}],
                  queue=queue, priority=0,
                  headers={'spacer_sent_at': time.time()})
    app.send_task('spacer.train_classifier', args=[{'job_token': 'c'}],
                  queue=queue, priority=9)      # a sender without the stamp

    conn, redis = broker_redis(app)
    try:
        view = read_broker(redis, [queue, 'nothing-here'])
    finally:
        conn.release()

    depth, empty = view.queues
    assert depth.by_priority[0] == 1 and depth.by_priority[5] == 1
    assert depth.by_priority[9] == 1 and depth.waiting == 3
    assert depth.oldest_id == oldest.id
    assert depth.oldest_sent_at == sent_at
    assert 119 < depth.oldest_age() < 180
    assert empty.waiting == 0 and empty.oldest_age() is None
