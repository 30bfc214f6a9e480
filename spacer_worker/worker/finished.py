"""Finished jobs marked where their queue's collector finds them.

A CoralNet queue (``contrib.coralnet.CeleryQueue``) sends each job with a
``spacer_books`` header naming its books. Once a final state (SUCCESS,
FAILURE, REVOKED) is stored for such a task, by a pool process or by the
worker's main process (hard time limit, lost pool process, revoke), the
task id goes into the books' ``done`` set (:mod:`spacer_worker.celery.books`),
so a collect cycle reads what finished instead of every job that waits.
The mark follows the result write: a collector that sees the mark sees
the result. A mark that fails is logged and left to the collector's sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states

from spacer_worker.celery import books

logger = logging.getLogger(__name__)


class FinishedMarkMixin:
    """Result backend mixin (Redis backends): final states are marked in
    their queue's books after they are stored."""

    def _store_result(self, task_id: Any, result: Any, state: str,
                      traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        stored = super()._store_result(task_id, result, state, traceback,
                                       request=request, **kwargs)
        if state in states.READY_STATES:
            mark(self, request, task_id)
        return stored


def mark(backend: Any, request: Any, task_id: Any) -> None:
    """Mark ``task_id`` finished in the books its request names, if any."""
    prefix = _header(request)
    if prefix is None or not isinstance(task_id, str):
        return
    try:
        books.mark_finished(backend.client, prefix, task_id)
    except Exception as e:  # the result is stored; the sweep finds it
        logger.warning('Could not mark task %s finished in the books %r: '
                       '%s: %s', task_id, prefix, type(e).__name__, e)


def _header(request: Any) -> Any:
    if request is None:
        return None
    if isinstance(request, dict):
        return request.get(books.HEADER)
    value = getattr(request, books.HEADER, None)
    if value is None:
        headers = getattr(request, 'headers', None)
        if isinstance(headers, dict):
            value = headers.get(books.HEADER)
    return value
