"""Loaded into the chaos benchmark's workers (``celery worker -I``).

Counts, in Redis, what the tasks themselves do: every run of a task body
(``chaos:runs``) and every commit of a final result under the lease fence
(``chaos:commits``, per task id, by spacer_worker.worker.delivery). Holds
each task ``CHAOS_TASK_HOLD`` seconds so kills land on running tasks.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery.signals import task_postrun, task_prerun

from spacer_worker.worker import delivery

RUNS_KEY = 'chaos:runs'
COMMITS_KEY = 'chaos:commits'
DONE_KEY = 'chaos:done'       # task id -> [run start, result stored]

delivery.AUDIT_KEY = COMMITS_KEY
_client: Any = None
_started: dict[str, float] = {}


def _redis() -> Any:
    global _client
    url = os.environ.get('CHAOS_BROKER_URL')
    if url and _client is None:
        import redis
        _client = redis.Redis.from_url(url)
    return _client


@task_postrun.connect
def _record_done(task_id: str | None = None, state: str | None = None,
                 **_: Any) -> None:
    # After the result is stored; a run that lost its message ends in
    # FAILURE (not stored), a rolled-forward commit in IGNORED.
    started = _started.pop(task_id, None)
    client = _redis()
    if client is not None and state in ('SUCCESS', 'IGNORED'):
        try:
            client.hset(DONE_KEY, task_id, json.dumps([started, time.time()]))
        except Exception:
            pass


@task_prerun.connect
def _record_and_hold(task_id: str | None = None, **_: Any) -> None:
    _started[task_id] = time.time()
    client = _redis()
    if client is not None:
        try:
            client.rpush(RUNS_KEY, json.dumps({
                'id': task_id, 'worker': os.environ.get('CHAOS_WORKER'),
                'at': time.time()}))
        except Exception:
            pass        # Redis restarting: the count is best effort
    hold = float(os.environ.get('CHAOS_TASK_HOLD') or 0)
    if hold:
        time.sleep(hold)
