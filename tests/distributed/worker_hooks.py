"""Loaded into test workers with ``celery worker -I``: instrumentation only.

Records every task run (task id, worker, pid) in a Redis list, so tests can
count how many times a task really ran, and can hold each task for a while
(``DIST_TEST_TASK_DELAY`` seconds) so a test can act while it runs.
``DIST_TEST_SOFT_LIMIT_IN=module:function`` makes that function send its
own process SIGUSR1 as it starts: billiard's soft time limit signal, so the
limit lands exactly there (a timer cannot aim it).
``DIST_TEST_SLOW_PRODUCTS=numpy|onnxruntime`` makes that engine of the MLP's
products 1 ms slower per call, so a worker that chose by timing would take
the other one. ``DIST_TEST_KILL_AT_COMMIT=1`` kills the whole worker as a
task's result is about to be committed.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import time
from typing import Any

from celery.signals import task_prerun

from spacer_worker.worker import delivery

RUNS_KEY = 'test:runs'
COMMITS_KEY = 'test:commits'

# Count commits (final results stored under the fence) per task id.
delivery.AUDIT_KEY = COMMITS_KEY


@task_prerun.connect
def _record_and_hold(task_id: str | None = None, task: Any = None,
                     **_: Any) -> None:
    url = os.environ.get('DIST_TEST_RUNS_URL')
    if url:
        import redis
        client = redis.Redis.from_url(url)
        client.rpush(RUNS_KEY, json.dumps({
            'id': task_id, 'task': getattr(task, 'name', None),
            'worker': os.environ.get('DIST_TEST_WORKER'),
            'pid': os.getpid(), 'at': time.time()}))
        client.close()
    delay = float(os.environ.get('DIST_TEST_TASK_DELAY') or 0)
    if delay:
        time.sleep(delay)


def _soft_limit_inside(target: str) -> None:
    module_name, _, name = target.partition(':')
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    if getattr(original, 'soft_limit_hook', False):
        return

    @functools.wraps(original)
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1)  # the pool's handler raises SoftTimeLimitExceeded here
        return original(*args, **kwargs)
    interrupted.soft_limit_hook = True
    setattr(module, name, interrupted)


@task_prerun.connect
def _aim_the_soft_limit(**_: Any) -> None:
    # In the pool child, before its first task (the parent must not get it).
    target = os.environ.get('DIST_TEST_SOFT_LIMIT_IN')
    if target:
        _soft_limit_inside(target)


def _slow_products(engine: str) -> None:
    # Adds 1 ms to each of one engine's products: a process that times
    # the engines against each other would pick the other one.
    from spacer_worker.training import products
    cls = {'numpy': products.NumpyProducts,
           'onnxruntime': products.OnnxRuntimeProducts}[engine]
    if getattr(cls, 'slowed', False):
        return
    for name in ('forward', 'weight_grad'):
        original = getattr(cls, name)

        @functools.wraps(original)
        def slowed(self: Any, *args: Any, _original: Any = original) -> None:
            time.sleep(0.001)
            _original(self, *args)
        setattr(cls, name, slowed)
    cls.slowed = True


@task_prerun.connect
def _slow_one_engine(**_: Any) -> None:
    # DIST_TEST_SLOW_PRODUCTS=numpy|onnxruntime: that engine loses any race.
    engine = os.environ.get('DIST_TEST_SLOW_PRODUCTS')
    if engine:
        _slow_products(engine)


@task_prerun.connect
def _die_at_the_commit(**_: Any) -> None:
    # DIST_TEST_KILL_AT_COMMIT=1: the whole worker dies (kill -9 of its
    # main process and the pool process) as a task's result is about to be
    # committed: its outputs are staged, nothing is committed yet.
    if not os.environ.get('DIST_TEST_KILL_AT_COMMIT') or \
            getattr(delivery.Delivery.commit, 'dies', False):
        return

    def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    dying.dies = True
    delivery.Delivery.commit = dying
