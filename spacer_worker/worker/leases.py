"""Worker leases: requeue the tasks of a worker that died outright.

With late acks on Redis, kombu keeps every delivered, not yet acknowledged
message in the ``unacked`` hash (delivery tag -> message) and hands it out
again only after ``visibility_timeout``. That timeout must be longer than
the longest task, or a live worker's long training runs twice (celery#5935);
so when a whole worker dies (OOM kill of its process group, lost host), the
tasks it held wait hours. ``task_reject_on_worker_lost`` does not help: it
needs a live parent process to requeue a dead child's task.

This module closes that gap with Redis itself:

* every worker holds a *lease*: a key ``spacer:lease:<id>`` with a TTL, and
  beside it ``spacer:claims:<id>``, the set of delivery tags it holds (from
  Celery's reserved and ETA-scheduled requests), rewritten together in one
  transaction every ``ttl / 3`` seconds by a thread of the worker's parent
  process, however busy the pool is;
* every worker also runs the *reaper* every ``ttl / 3`` seconds, one at a
  time under a Redis lock: an unacked delivery tag that no live lease
  claims becomes a suspect, and one still unclaimed ``ttl`` seconds later
  (by the Redis clock, so worker clocks do not matter) is returned to its
  queue with kombu's own atomic ``restore_by_tag`` (the same transaction
  kombu's visibility timeout uses; a message acked meanwhile is left
  alone).

So a dead worker's tasks run elsewhere about ``2 * ttl`` (plus one or two
ticks) after it died, while a live worker's task is never requeued however
long it runs: its lease is renewed by a thread independent of the task.
Fresh deliveries not yet claimed are covered by the suspect delay; a worker
that was cut off from Redis waits ``ttl`` after reconnecting before it
reaps, so every live worker has re-claimed its tasks first.

Limits: Redis transport only (leases are off for other brokers, and with
``global_keyprefix``); a worker stalled (not dead) for longer than ``ttl``
may see its tasks run twice, which is why outputs are written atomically.
``LEASE_TTL`` (default 30 s) sets the timing; 0 disables leases.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import bootsteps

from spacer_worker import config
from spacer_worker.metrics import recording

logger = logging.getLogger(__name__)

LEASES_KEY = 'spacer:leases'          # zset: worker id -> lease expiry
LEASE_KEY = 'spacer:lease:{}'         # worker id -> JSON info, with TTL
CLAIMS_KEY = 'spacer:claims:{}'       # worker id -> set of delivery tags
REAPER_LOCK_KEY = 'spacer:reaper:lock'
SUSPECTS_KEY = 'spacer:reaper:suspects'   # tag -> first seen unclaimed

_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class LeaseTimings:
    """All lease timings follow from the TTL."""

    ttl: float

    @property
    def tick(self) -> float:
        """Seconds between renewals (and between reaper passes)."""
        return self.ttl / 3

    @property
    def grace(self) -> float:
        """How long an unacked message must stay unclaimed to be reaped."""
        return self.ttl

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))


def held_delivery_tags() -> set[str]:
    """Delivery tags of every message this worker process holds."""
    from celery.worker import state

    tags: set[str] = set()
    for requests in (state.reserved_requests, state.scheduled_requests):
        for _ in range(5):  # the consumer thread may change the set
            try:
                held = list(requests)
                break
            except RuntimeError:
                continue
        else:
            held = []
        for request in held:
            tag = getattr(getattr(request, 'message', None), 'delivery_tag',
                          None)
            if tag is not None:
                tags.add(str(tag))
    return tags


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_time(client: Any) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def renew(client: Any, worker_id: str, tags: Iterable[str],
          timings: LeaseTimings, info: dict | None = None) -> None:
    """Write this worker's lease and claims, atomically, for one TTL."""
    now = redis_time(client)
    claims = CLAIMS_KEY.format(worker_id)
    pipe = client.pipeline(transaction=True)
    pipe.set(LEASE_KEY.format(worker_id), json.dumps(info or {}),
             px=timings.ttl_ms)
    pipe.zadd(LEASES_KEY, {worker_id: now + timings.ttl})
    pipe.delete(claims)
    tags = list(tags)
    if tags:
        pipe.sadd(claims, *tags)
        pipe.pexpire(claims, timings.ttl_ms)
    pipe.execute()


def release(client: Any, worker_id: str) -> None:
    """Drop a lease (clean shutdown); what it still held gets reaped."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(LEASE_KEY.format(worker_id), CLAIMS_KEY.format(worker_id))
    pipe.zrem(LEASES_KEY, worker_id)
    pipe.execute()


def live_claims(client: Any, now: float) -> set[str]:
    """Delivery tags claimed by workers whose lease has not expired."""
    # Leases that expired long ago are forgotten (a day of history).
    client.zremrangebyscore(LEASES_KEY, '-inf', now - 86400)
    workers = [_text(w) for w in
               client.zrangebyscore(LEASES_KEY, now, '+inf')]
    if not workers:
        return set()
    return {_text(t) for t in
            client.sunion([CLAIMS_KEY.format(w) for w in workers])}


def reap_once(channel: Any, owner: str, timings: LeaseTimings) -> list[str]:
    """One reaper pass; returns the delivery tags put back in their queue.

    ``channel`` is a kombu Redis channel: its client, its ``unacked`` key
    names and its QoS's ``restore_by_tag`` are kombu's own.
    """
    client = channel.client
    lock_ms = max(1000, int(timings.tick * 2000))
    if not client.set(REAPER_LOCK_KEY, owner, nx=True, px=lock_ms):
        return []       # another worker is reaping
    try:
        unacked = {_text(t) for t in client.hkeys(channel.unacked_key)}
        now = redis_time(client)
        suspects = {_text(k): float(v) for k, v in
                    client.hgetall(SUSPECTS_KEY).items()}
        unclaimed = unacked - live_claims(client, now) if unacked else set()
        due, still = [], {}
        for tag in unclaimed:
            first_seen = suspects.get(tag, now)
            if now - first_seen >= timings.grace:
                due.append(tag)
            else:
                still[tag] = first_seen
        pipe = client.pipeline(transaction=True)
        pipe.delete(SUSPECTS_KEY)
        if still:
            pipe.hset(SUSPECTS_KEY, mapping=still)
        pipe.execute()
        for tag in due:
            channel.qos.restore_by_tag(tag, client=client)
            logger.warning(
                'Requeued message %s: it was held by a worker whose lease '
                'expired (the worker died or lost Redis for over %.0f s).',
                tag, timings.ttl)
        return due
    finally:
        client.eval(_RELEASE_LOCK, 1, REAPER_LOCK_KEY, owner)


class LeaseKeeper:
    """The thread that renews one worker's lease and runs the reaper."""

    def __init__(self, connect: Callable[[], Any], worker_id: str,
                 timings: LeaseTimings,
                 held: Callable[[], set[str]] = held_delivery_tags,
                 info: dict | None = None) -> None:
        self.connect = connect          # -> kombu Connection (Redis)
        self.worker_id = worker_id
        self.timings = timings
        self.held = held
        self.info = info or {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._renewed_at: float | None = None     # monotonic
        self._connected_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f'spacer-lease-{self.worker_id}',
            daemon=True)
        self._thread.start()

    def stop(self) -> None:
        # Called by the worker's shutdown sequence, possibly before its pool
        # has drained its running tasks: keep renewing until the process
        # exits, so a task finishing during a warm shutdown is not requeued.
        # (kombu itself restores the messages a stopping worker still holds.)
        pass

    def close(self, release_lease: bool = True) -> None:
        """Stop the thread now (embedded workers, tests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if release_lease and self._connection is not None:
            try:
                release(self._connection.default_channel.client,
                        self.worker_id)
            except Exception:
                pass
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                pass
        self._connection = None

    def tick(self) -> list[str]:
        """Renew the lease, then reap if this worker may; returns requeued
        tags. Raises on connection errors."""
        if self._connection is None:
            self._connection = self.connect()
        channel = self._connection.default_channel
        renew(channel.client, self.worker_id, self.held(), self.timings,
              self.info)
        now = time.monotonic()
        if self._renewed_at is not None and \
                now - self._renewed_at > self.timings.ttl:
            logger.warning(
                'Lease of worker %s lapsed for %.0f s (Redis unreachable or '
                'process stalled): tasks it held may have been requeued.',
                self.worker_id, now - self._renewed_at)
        self._renewed_at = now
        if self._connected_since is None:
            self._connected_since = now
        if now - self._connected_since < self.timings.ttl:
            return []   # let every live worker re-claim first
        restored = reap_once(channel, self.worker_id, self.timings)
        recording.leases_restored(len(restored))
        return restored

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.tick()
                if failing:
                    logger.info('Lease of worker %s renewed again.',
                                self.worker_id)
                failing = False
            except Exception as e:
                if not failing:
                    logger.warning(
                        'Could not renew the lease of worker %s (%s: %s); '
                        'retrying every %.1f s.', self.worker_id,
                        type(e).__name__, e, self.timings.tick)
                failing = True
                self._connected_since = None
                self._drop_connection()
            self._stop.wait(self.timings.tick)


def leases_supported(app: Any) -> tuple[bool, str]:
    """Whether this app's broker can hold leases, and why not."""
    ttl = config.get('LEASE_TTL')
    if ttl <= 0:
        return False, 'LEASE_TTL is 0'
    url = str(app.conf.broker_url or '')
    if not url.startswith(('redis://', 'rediss://', 'unix://', 'socket://')):
        return False, f'broker {url.split("://")[0]!r} is not Redis'
    options = app.conf.broker_transport_options or {}
    if options.get('global_keyprefix'):
        return False, 'broker global_keyprefix is set'
    return True, ''


class LeaseStep(bootsteps.StartStopStep):
    """Worker bootstep running a :class:`LeaseKeeper` in the parent."""

    label = 'Leases'

    def include_if(self, worker: Any) -> bool:
        ok, why = leases_supported(worker.app)
        if not ok:
            logger.info('Worker leases off: %s.', why)
        return ok

    def create(self, worker: Any) -> LeaseKeeper:
        timings = LeaseTimings(config.get('LEASE_TTL'))
        worker_id = (f'{worker.hostname}:{os.getpid()}:'
                     f'{uuid.uuid4().hex[:8]}')
        info = {'hostname': worker.hostname, 'host': socket.gethostname(),
                'pid': os.getpid(), 'started': time.time()}
        return LeaseKeeper(worker.app.connection_for_write, worker_id,
                           timings, info=info)
