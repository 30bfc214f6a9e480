"""What waits in the broker: length per queue and priority, the oldest
waiting job's age, unacknowledged messages and live workers.

Read straight from the broker's Redis in one script (kombu's layout: a
list per queue and priority, ``<queue>`` for priority 0 and
``<queue>\\x06\\x16<n>`` for n = 1-9, newest at the head; delivered,
unacknowledged messages in the ``unacked`` hash). Client side: needs only
redis, for ``spacer-worker status --queues`` as well as the exporter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacer_worker import config
from spacer_worker.celery import QueueKind, queue_name
from spacer_worker.exceptions import ConfigError

# kombu.transport.redis: Channel.sep, the unacked hash's default name.
PRIORITY_SEP = '\x06\x16'
UNACKED_KEY = 'unacked'
# spacer_worker.worker.leases.LEASE_KEY, one key per live worker (with a
# TTL); spelt here so the client side never imports the worker package.
LEASE_PATTERN = 'spacer:lease:*'


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    by_priority: dict[int, int]             # priority -> waiting messages
    oldest_id: str | None = None            # task id of the oldest message
    oldest_sent_at: float | None = None     # when its client sent it

    @property
    def waiting(self) -> int:
        return sum(self.by_priority.values())

    def oldest_age(self, now: float | None = None) -> float | None:
        if self.oldest_sent_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) -
                   self.oldest_sent_at)


@dataclass(frozen=True)
class BrokerView:
    queues: list[QueueDepth]
    unacked: int = 0
    workers_alive: int = 0
    read_at: float = field(default_factory=time.time)


def list_key(queue: str, priority: int) -> str:
    return queue if priority == 0 else f'{queue}{PRIORITY_SEP}{priority}'


def known_queues(extra: Iterable[str] = ()) -> list[str]:
    """Every queue the configuration routes to: the contract's kinds, the
    CoralNet spec-level queues, plus ``extra``; no list kept by hand."""

    names = [queue_name(kind) for kind in QueueKind]
    names += parse_spec_queues(config.get('CORALNET_SPEC_QUEUES')).values()
    names += list(extra)
    return list(dict.fromkeys(n for n in names if n))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Only the end of the oldest message comes back: kombu writes the body
# (which may be a training's labels, megabytes) first and the headers and
# properties after it; ours and the task id are within the last few KB.
_TAIL_BYTES = 4096
_READ = """
local out = {}
for _, key in ipairs(KEYS) do
    out[#out + 1] = redis.call('llen', key)
    local oldest = redis.call('lindex', key, -1)
    out[#out + 1] = oldest and string.sub(oldest, -tonumber(ARGV[2])) or ''
end
out[#out + 1] = redis.call('hlen', ARGV[1])
return out
"""
_SENT_AT = re.compile(rb'"spacer_sent_at": ([0-9.eE+-]+)')
_TASK_ID = re.compile(rb'"correlation_id": "([^"]+)"')


def _oldest(tail: bytes) -> tuple[str | None, float | None]:
    """(task id, sent at) from the end of one kombu message envelope."""
    if not tail:
        return None, None
    task_id = _TASK_ID.search(tail)
    sent = _SENT_AT.search(tail)
    try:
        sent_at = float(sent.group(1)) if sent else None
    except ValueError:
        sent_at = None
    return (task_id.group(1).decode(errors='replace') if task_id else None,
            sent_at)


def read_broker(redis: Any, queues: Sequence[str],
                priorities: Sequence[int] = tuple(range(10))) -> BrokerView:
    """One script: LLEN and the end of the oldest message of every list,
    and the unacked hash's size; then the live leases (SCAN)."""
    keys = [list_key(q, p) for q in queues for p in priorities]
    replies = redis.eval(_READ, len(keys), *keys, UNACKED_KEY,
                         str(_TAIL_BYTES))
    depths = []
    for i, queue in enumerate(queues):
        by_priority: dict[int, int] = {}
        oldest: tuple[str | None, float | None] = (None, None)
        found = False
        for j, priority in enumerate(priorities):
            k = 2 * (i * len(priorities) + j)
            length, tail = replies[k], replies[k + 1]
            by_priority[priority] = int(length)
            if not length:
                continue
            task_id, sent = _oldest(tail if isinstance(tail, bytes)
                                    else str(tail).encode())
            if not found or (sent is not None and (
                    oldest[1] is None or sent < oldest[1])):
                oldest, found = (task_id, sent), True
        depths.append(QueueDepth(queue, by_priority, *oldest))
    leases = sum(1 for _ in redis.scan_iter(match=LEASE_PATTERN, count=500))
    return BrokerView(queues=depths, unacked=int(replies[-1]),
                      workers_alive=leases)


def broker_redis(app: Any = None) -> tuple[Any, Any]:
    """(kombu connection, its Redis client) of the broker, with kombu's own
    connection settings (TLS included); release the connection when done.
    ConfigError for another broker."""
    if app is None:
        # The package's app, only when the caller gives none.
        from spacer_worker.celery import app
    conn = app.connection_for_read()
    if conn.transport.driver_type != 'redis':
        conn.release()
        raise ConfigError(f'Queue lengths are read from a Redis broker; '
                          f'BROKER_URL uses {conn.transport.driver_type}.')
    return conn, conn.default_channel.client


def format_view(view: BrokerView, now: float | None = None) -> list[str]:
    """The table ``spacer-worker status --queues`` prints."""
    now = time.time() if now is None else now
    lines = [f"{'queue':<24} {'waiting':>7}  {'by priority (0 first)':<30} "
             f"oldest waiting"]
    for depth in view.queues:
        busy = ', '.join(f'{p}: {n}' for p, n in depth.by_priority.items()
                         if n) or '-'
        age = depth.oldest_age(now)
        if depth.waiting == 0:
            oldest = '-'
        elif age is None:
            oldest = 'unknown (not sent by spacer_worker.client.jobs)'
        else:
            oldest = f'{_duration(age)} ({depth.oldest_id})'
        lines.append(f'{depth.queue:<24} {depth.waiting:>7}  {busy:<30} '
                     f'{oldest}')
    lines.append(f'delivered, not yet acknowledged: {view.unacked}; workers '
                 f'with a live lease: {view.workers_alive}')
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 7200:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.1f} h'


def parse_spec_queues(text: str) -> dict[str, str]:
    """``'train_classifier:high=train_highmem, high=big'`` -> mapping.

    Keys are ``<task_name>:<spec>`` or a bare ``<spec>`` for any task.
    """
    mapping: dict[str, str] = {}
    for item in (text or '').split(','):
        item = item.strip()
        if not item:
            continue
        key, sep, queue = item.partition('=')
        if not sep or not key.strip() or not queue.strip():
            raise ConfigError(
                f"CORALNET_SPEC_QUEUES: {item!r} is not '<spec>=<queue>' or "
                f"'<task_name>:<spec>=<queue>'.")
        mapping[key.strip().lower()] = queue.strip()
    return mapping
