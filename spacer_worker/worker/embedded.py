"""Celery workers inside this process, on an in-memory broker.

For running the whole pipeline where no broker is installed (the demo): the
same app, task code, queues and JSON serialization as production, with
kombu's ``memory://`` transport and the ``cache+memory://`` result backend
(both shared by every thread of the process). One worker, in a thread,
consumes every queue with one pool thread per queue, so a long training
does not hold up extraction. (Celery's queue selection belongs to the app,
so several workers of one app in one process cannot split the queues.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery.contrib.testing.worker import start_worker
from celery.utils.imports import symbol_by_name

from spacer_worker.worker.leases import LeaseStep

EMBEDDED_BROKER = 'memory://'
EMBEDDED_BACKEND = 'cache+memory://'


def configure_embedded(app: Any) -> None:
    """Point ``app`` at the in-memory broker and result backend.

    Call before anything uses the app's connection or backend.
    """
    options = dict(app.conf.broker_transport_options or {})
    # The virtual transport polls; the default 1 s would add a second of
    # latency to every hop.
    options['polling_interval'] = 0.02
    app.conf.update(
        broker_url=EMBEDDED_BROKER,
        result_backend=EMBEDDED_BACKEND,
        broker_transport_options=options,
        worker_hijack_root_logger=False,
    )
    # Leases let other workers requeue a dead worker's Redis messages;
    # with one process and an in-memory broker there is nobody to do so.
    # The app names the step by path (the client side never imports it).
    steps = app.steps['worker']
    for step in [s for s in steps if symbol_by_name(s) is LeaseStep]:
        steps.discard(step)
    # A backend made before the switch would still point at Redis.
    if getattr(app, '_backend', None) is not None:
        app._backend = None


@contextmanager
def embedded_workers(app: Any, queues: Sequence[str],
                     concurrency: int | None = None, loglevel: str = 'WARNING',
                     shutdown_timeout: float = 30.0) -> Iterator[Any]:
    """Run a thread-pool worker on ``queues`` until the block exits.

    Celery's own embedded worker (``celery.contrib.testing``): a worker
    thread, started once its consumer is ready, stopped warm on exit. It
    waits for that start without a time limit, which is safe here: the
    memory transport has no connection that could fail to come up.
    """
    with start_worker(app, concurrency=concurrency or len(queues),
                      pool='threads', loglevel=loglevel,
                      perform_ping_check=False,
                      shutdown_timeout=shutdown_timeout,
                      hostname='embedded@localhost',
                      queues=list(queues)) as worker:
        yield worker
