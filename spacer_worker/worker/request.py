"""The worker's task request: a message cannot raise its own time limit.

A message carries its time limits in its ``timelimit`` header, and Celery
lets them win over the worker's. A message asking for a day would then run
far past what the operator allowed (and past the broker's visibility
timeout, so Redis would hand it to a second worker). This request clamps
both limits to the task's configured ones (``<KIND>_TIME_LIMIT``; on a
high-spec queue ``<KIND>_HIGH_TIME_LIMIT``), and logs what it changed.
Lower limits in a message are kept; a message without limits gets the
ceilings themselves.

The queue that picks the ceiling is the one the worker consumed the message
from: ``delivery_info`` is rewritten on receipt by
:mod:`spacer_worker.worker.consumed_queue`, since a sender can write any
queue name into its own message.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request as CeleryRequest

logger = logging.getLogger(__name__)


def clamp_time_limits(asked: Any, hard_max: float | None,
                      soft_max: float | None
                      ) -> tuple[float | None, float | None]:
    """(hard, soft) of a message, each at most the configured limit; a
    missing or malformed value falls back to the configured one."""
    try:
        hard, soft = asked
    except (TypeError, ValueError):
        hard = soft = None

    def clamp(value: Any, ceiling: float | None) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value <= 0:
            return ceiling
        if ceiling is not None and value > ceiling:
            return ceiling
        return value
    hard = clamp(hard, hard_max)
    soft = clamp(soft, soft_max if soft_max is not None else hard)
    if hard is not None and soft is not None and soft > hard:
        soft = hard
    return hard, soft


class Request(CeleryRequest):
    def __init__(self, message: Any, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        asked = self._request_dict.get('timelimit')
        hard_max, soft_max = _ceilings(self)
        if not isinstance(asked, (list, tuple)) or not any(asked):
            # No limits in the message: the worker's own for this queue.
            self.time_limits = (hard_max, soft_max)
            self._request_dict['timelimit'] = [hard_max, soft_max]
            return
        limits = clamp_time_limits(asked, hard_max, soft_max)
        if any(isinstance(a, (int, float)) and b is not None and a > b
               for a, b in zip(asked, limits, strict=False)):
            logger.warning(
                'Task %s[%s] asked for time limits %r (hard, soft); this '
                'worker allows at most (%s, %s) and uses %r.', self.name,
                self.id, tuple(asked), hard_max, soft_max, limits)
        self.time_limits = limits
        self._request_dict['timelimit'] = list(limits)


def _ceilings(request: Any) -> tuple[float | None, float | None]:
    """(hard, soft) limits of the queue the message was consumed from: that
    queue's kind's; on a high-spec queue (extract_high, train_high) at
    least the task's, as they are the longer ones. A queue that is none of
    ours: the task's configured limits."""
    from spacer_worker.celery import queue_name, time_limits
    from spacer_worker.constants import HIGH_SPEC_KINDS, QueueKind

    hard_max, soft_max = request.task.time_limit, request.task.soft_time_limit
    queue = (getattr(request, 'delivery_info', None) or {}).get('routing_key')
    for kind in QueueKind:
        if queue and queue == queue_name(kind):
            soft, hard = time_limits(kind)
            if kind in HIGH_SPEC_KINDS.values():
                return max(hard, hard_max or 0), max(soft, soft_max or 0)
            return hard, soft
    return hard_max, soft_max
