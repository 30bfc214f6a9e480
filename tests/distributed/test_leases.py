"""Dead workers and long tasks, with real worker processes.

A whole worker killed with kill -9 (parent and pool children, as an OOM
kill of the group or a lost host) must not strand the tasks it held for the
visibility timeout (hours): they run on another worker within 2 minutes.
A task running far longer than the lease on a live worker runs once.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.messages import ExtractFeaturesReturnMsg
from tests.builders import ROWCOLS, extract_msg
from tests.services import LEASE_TTL, runs, wait_for


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


def test_lease_less_worker_long_task_runs_once_beside_leased_reapers(
        app, start_worker, data_dir, redis_db):
    # Given a worker without a lease (LEASE_TTL=0: an older version, or
    # another app on the same Redis) running a task for 4 lease lifetimes,
    # and a leased worker whose reaper runs all that time
    duration = 4 * float(LEASE_TTL)
    start_worker('leaseless', queues='extract',
                 env={'SPACER_LEASE_TTL': '0',
                      'DIST_TEST_TASK_DELAY': str(duration)})
    msg = extract_msg(data_dir, 'long')
    result = app.send_task('spacer.extract_features', args=[msg.serialize()],
                           queue='extract')
    wait_for(lambda: runs(redis_db), 30, what='the task running')
    start_worker('leased', queues='extract')

    ExtractFeaturesReturnMsg.deserialize(result.get(timeout=60))

    # Then it ran once, on the lease-less worker, and nothing is left over
    assert [r['worker'] for r in runs(redis_db)] == ['leaseless']
    wait_for(lambda: redis_db.hlen('unacked') == 0, 10, what='all acked')
    assert redis_db.llen('extract') == 0


def test_stalled_worker_that_wakes_up_commits_nothing(
        app, start_worker, data_dir, redis_db):
    # Given worker A running a task when it is stopped (SIGSTOP) for longer
    # than its lease, and worker B that runs the requeued message
    stalled = start_worker('stalled', queues='extract',
                           env={'DIST_TEST_TASK_DELAY': '2'})
    msg = extract_msg(data_dir, 'img')
    result = app.send_task('spacer.extract_features', args=[msg.serialize()],
                           queue='extract')
    wait_for(lambda: runs(redis_db), 30, what='A running the task')
    for pid in stalled.pids():
        os.kill(pid, signal.SIGSTOP)
    try:
        start_worker('rescuer', queues='extract')
        ExtractFeaturesReturnMsg.deserialize(result.get(timeout=60))
        assert [r['worker'] for r in runs(redis_db)] == ['stalled', 'rescuer']
        written = os.stat(msg.feature_loc.key)
    finally:
        # When A wakes up and finishes its run
        for pid in stalled.pids():
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: 'writes nothing' in stalled.log_text(), 30,
             what='A noticing it lost the message')

    # Then A wrote nothing: the feature file is B's, one commit was made,
    # the result is B's success, and B's ack was not undone by A
    time.sleep(1)
    again = os.stat(msg.feature_loc.key)
    assert (again.st_ino, again.st_mtime_ns) == \
        (written.st_ino, written.st_mtime_ns)
    assert int(redis_db.hget('test:commits', result.id)) == 1
    assert result.state == 'SUCCESS'
    assert not [p for p in os.listdir(data_dir) if p.endswith('.staged')]
    wait_for(lambda: redis_db.hlen('unacked') == 0, 10, what='all acked')
    assert redis_db.llen('extract') == 0


def test_a_message_cannot_raise_its_own_time_limit(
        app, start_worker, data_dir, redis_db):
    # Given workers allowing extraction tasks 2 s (soft limit 1 s), and a
    # message asking for a day in Celery's timelimit header
    worker = start_worker('strict', queues='extract',
                          env={'SPACER_EXTRACT_TIME_LIMIT': '2',
                               'DIST_TEST_TASK_DELAY': '8'})
    msg = extract_msg(data_dir, 'greedy')
    sent = time.monotonic()
    result = app.send_task('spacer.extract_features', args=[msg.serialize()],
                           queue='extract', time_limit=86400,
                           soft_time_limit=86000)

    # Then the worker's limits apply: the soft limit interrupts the 8 s
    # hold after 1 s (the task then finishes), it does not run 8 s
    wait_for(lambda: result.ready(), 30, what='the task finished')
    assert time.monotonic() - sent < 6
    assert 'Soft time limit (1s) exceeded' in worker.log_text()
    assert 'asked for time limits (86400, 86000)' in worker.log_text()
