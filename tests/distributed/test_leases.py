"""Dead workers and long tasks, with real worker processes.

A whole worker killed with kill -9 (parent and pool children, as an OOM
kill of the group or a lost host) must not strand the tasks it held for the
visibility timeout (hours): they run on another worker within 2 minutes.
A task running far longer than the lease on a live worker runs once.
"""

from __future__ import annotations

import time
import uuid

import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.messages import ExtractFeaturesReturnMsg
from tests.distributed.conftest import LEASE_TTL
from tests.distributed.data import ROWCOLS, extract_msg
from tests.distributed.services import runs, wait_for


@pytest.mark.parametrize('lease_ttl', [
    LEASE_TTL,
    # The production default (30 s): about a minute of waiting.
    pytest.param('', marks=pytest.mark.slow, id='default-ttl'),
])
def test_killed_worker_tasks_run_elsewhere_within_two_minutes(
        app, start_worker, data_dir, redis_db, lease_ttl):
    # Given worker A holding two running tasks, and worker B
    env = {'SPACER_LEASE_TTL': lease_ttl}
    doomed = start_worker('doomed', queues='extract', concurrency=2,
                          env={'DIST_TEST_TASK_DELAY': '300', **env})
    msgs = [extract_msg(data_dir, f'img{i}', seed=i) for i in range(6)]
    results = [app.send_task('spacer.extract_features', args=[m.serialize()],
                             queue='extract', task_id=str(uuid.uuid4()))
               for m in msgs]

    def running_on_doomed():
        ids = [r['id'] for r in runs(redis_db) if r['worker'] == 'doomed']
        return ids if len(ids) == 2 else None
    held = wait_for(running_on_doomed, 30, what='A running two tasks')
    start_worker('survivor', queues='extract', concurrency=2, env=env)

    # When A is killed outright, mid-task
    assert len(doomed.pids()) >= 3          # parent + 2 pool processes
    doomed.kill()
    killed_at = time.monotonic()
    wait_for(lambda: not doomed.pids(), 10, what='whole worker gone')

    # Then every task completes, A's on B, within 2 minutes
    for result in results:
        remaining = 120 - (time.monotonic() - killed_at)
        ExtractFeaturesReturnMsg.deserialize(result.get(timeout=remaining))
    recovered_in = time.monotonic() - killed_at
    print(f'tasks of the killed worker done {recovered_in:.1f} s after kill')
    assert recovered_in < 120

    by_id = {}
    for run in runs(redis_db):
        by_id.setdefault(run['id'], []).append(run['worker'])
    for task_id in held:
        assert by_id[task_id] == ['doomed', 'survivor']
    # No output lost or half-written: every feature file is complete.
    for msg in msgs:
        features = ImageFeatures.load(msg.feature_loc)
        assert features.npoints == len(ROWCOLS)
    # (the ack follows the stored result by a moment)
    wait_for(lambda: redis_db.hlen('unacked') == 0, 10, what='all acked')


def test_task_outliving_the_lease_on_a_live_worker_runs_once(
        app, start_worker, data_dir, redis_db):
    # Given a task that runs for 4 lease lifetimes on a live worker, and an
    # idle worker whose reaper looks for orphaned messages all that time
    duration = 4 * float(LEASE_TTL)
    start_worker('busy', queues='extract',
                 env={'DIST_TEST_TASK_DELAY': str(duration)})
    start_worker('idle', queues='extract')
    msg = extract_msg(data_dir, 'long')
    result = app.send_task('spacer.extract_features', args=[msg.serialize()],
                           queue='extract')

    ExtractFeaturesReturnMsg.deserialize(result.get(timeout=60))

    # Then it ran exactly once, on the worker that took it
    assert [r['id'] for r in runs(redis_db)] == [result.id]
    # (the ack follows the stored result by a moment)
    wait_for(lambda: redis_db.hlen('unacked') == 0, 10, what='all acked')
