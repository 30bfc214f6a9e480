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

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

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
    steps = app.steps['worker']
    for step in [s for s in steps if 'leases' in str(s)]:
        steps.discard(step)
    # A backend made before the switch would still point at Redis.
    if getattr(app, '_backend', None) is not None:
        app._backend = None


@contextmanager
def embedded_workers(app: Any, queues: Sequence[str],
                     concurrency: int | None = None, loglevel: str = 'WARNING',
                     start_timeout: float = 30.0) -> Iterator[Any]:
    """Run a thread-pool worker on ``queues`` until the block exits."""
    from celery.worker import WorkController
    from celery.worker import state as worker_state

    class _Worker(WorkController):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.ready = threading.Event()
            super().__init__(*args, **kwargs)

        def on_consumer_ready(self, consumer: Any) -> None:
            self.ready.set()

    app.finalize()
    app.set_current()
    app.set_default()
    worker = _Worker(app=app, hostname='embedded@localhost', pool='threads',
                     concurrency=concurrency or len(queues),
                     queues=list(queues), loglevel=loglevel,
                     without_heartbeat=True, without_mingle=True,
                     without_gossip=True)
    thread = threading.Thread(target=worker.start, daemon=True,
                              name='spacer-embedded-worker')
    thread.start()
    try:
        if not worker.ready.wait(start_timeout):
            raise RuntimeError(f'The embedded worker did not start within '
                               f'{start_timeout} s.')
        yield worker
    finally:
        # The flag the worker's consumer loop checks; 0 = warm shutdown.
        worker_state.should_terminate = 0
        thread.join(30)
        worker_state.should_terminate = None
