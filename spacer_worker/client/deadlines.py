"""How long a job can be waiting or running, whatever its record says.

A result record in Redis may say PENDING or STARTED for ever (written over
a real FAILURE, or kept without its TTL). Counted from the submit time, a
job can wait ``JOB_MAX_QUEUE_WAIT`` and then run one hard time limit; with
retries (a transient error, a pool process that died), each try's limit
and backoff too. Past that, the record is not believed: ``CeleryQueue``
reads the job LOST (DROPPED), ``Client.result`` stops waiting.

Client side: settings only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class Deadlines:
    """The settings a deadline is counted from, read once per collect
    call (not per job)."""

    wait: float          # JOB_MAX_QUEUE_WAIT
    longest: float       # the longest hard time limit of any kind
    tries: int           # TASK_MAX_RETRIES + 1
    backoff: float       # RETRY_BACKOFF_MAX

    @classmethod
    def from_settings(cls) -> Deadlines:
        from spacer_worker import config
        from spacer_worker.celery import time_limits
        from spacer_worker.constants import QueueKind

        return cls(wait=config.get('JOB_MAX_QUEUE_WAIT'),
                   longest=max(time_limits(kind)[1] for kind in QueueKind),
                   tries=max(0, config.get('TASK_MAX_RETRIES')) + 1,
                   backoff=max(0, config.get('RETRY_BACKOFF_MAX')))

    def of(self, info: dict, pending: bool) -> float:
        """When a job (its books entry ``info``: submit time, hard time
        limit) still waiting (``pending``) or running by its record can no
        longer be so: waiting, its queue wait plus one hard time limit
        after submission (as its PENDING record's TTL); running or
        retrying, every try's limit and backoff on top."""
        limit = info.get('time_limit')
        if not _number(limit) or not 0 < limit <= self.longest:
            limit = self.longest  # books of an earlier version, or forged
        start = float(info['submitted_at']) + self.wait
        if pending:
            return start + limit
        return start + self.tries * (limit + self.backoff)

    def longest_life(self) -> float:
        """Seconds any job can take from submission to its final state."""
        return self.wait + self.tries * (self.longest + self.backoff)
