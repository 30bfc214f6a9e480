"""The health check: is the broker up, and do workers answer?

Used by ``spacer-worker check``, the demo and the container healthcheck
(``docker/healthcheck.py``); it runs on a client install.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacer_worker import celery as celery_app
from spacer_worker import config

__all__ = ['check']


def check(node: str | None = None, queues: Sequence[str] | None = None,
          timeout: float = 5.0, app: Any = None) -> tuple[bool, list[str]]:
    """Is the broker reachable and does a worker (``node``, or any) answer
    a ping, consuming every queue in ``queues``? Returns (ok, report lines)."""
    if app is None:
        app = celery_app.app
    broker = config.redact('BROKER_URL', config.broker_url())
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as e:
        return False, [f'broker {broker} unreachable: {type(e).__name__}: {e}']
    destination = [node] if node else None
    replies = app.control.ping(destination=destination, timeout=timeout)
    names = sorted(name for reply in replies for name in reply)
    if not names:
        who = f'worker {node!r}' if node else 'no worker'
        return False, [f'broker {broker} is up, but {who} answered a ping '
                       f'within {timeout} s.']
    lines = [f'broker {broker}: ok', f"workers answering: {', '.join(names)}"]
    if queues:
        active = app.control.inspect(destination=names,
                                     timeout=timeout).active_queues() or {}
        consumed = {q['name'] for qs in active.values() for q in qs}
        missing = [q for q in queues if q not in consumed]
        if missing:
            return False, lines + [f"no answering worker consumes queue(s) "
                                   f"{', '.join(missing)}"]
        lines.append(f"queues consumed: {', '.join(queues)}")
    return True, lines
