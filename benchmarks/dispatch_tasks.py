"""Tasks for benchmarks/dispatch.py, loaded into its workers with ``-I``.

``bench.spacer_echo`` goes through spacer_worker's own task path (the
SpacerTask adapter: payload decode into a message class, result
serialization) around a trivial function, so the benchmark measures that
path and not any model work. With BENCH_COUNT_RUNS set, every run of any
task is counted in Redis, so the load run can prove none ran twice.
"""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task
from celery.signals import task_prerun

from spacer_worker.messages import ClassifyFeaturesMsg, ClassifyReturnMsg
from spacer_worker.worker.adapters import SpacerTask, _run

RUNS_KEY = 'bench:runs'
_client = None


def _echo(msg: Any) -> Any:
    return ClassifyReturnMsg(runtime=0.0, scores=[(1, 1, [0.25, 0.75])],
                             classes=[1, 2], valid_rowcol=True)


@shared_task(name='bench.spacer_echo', bind=True, base=SpacerTask)
def spacer_echo(self: SpacerTask, payload: Any) -> dict:
    return _run(self, payload, ClassifyFeaturesMsg, _echo)


@shared_task(name='bench.plain_echo')
def plain_echo(payload: Any) -> dict:
    """The bare task body, on spacer_worker's app and settings."""
    return {'runtime': 0.0, 'scores': [[1, 1, [0.25, 0.75]]],
            'classes': [1, 2], 'valid_rowcol': True}


@task_prerun.connect
def _count_run(task_id: str | None = None, **_: Any) -> None:
    global _client
    url = os.environ.get('BENCH_COUNT_RUNS')
    if not url:
        return
    if _client is None:
        import redis
        _client = redis.Redis.from_url(url)
    _client.hincrby(RUNS_KEY, task_id, 1)
