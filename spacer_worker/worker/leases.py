"""Worker leases: requeue the messages of a worker that died, and only those.

With late acks on Redis, kombu keeps every delivered, not yet acknowledged
message in the ``unacked`` hash (delivery tag -> message) and hands it out
again only after ``visibility_timeout`` (hours, so a live worker's long
training is not handed out twice). When a whole worker dies, its messages
would wait that long. Leases close the gap, with these rules:

* **Claims are taken at delivery.** A leased worker's kombu QoS writes the
  unacked entry and ``spacer:owner[tag] = <lease>`` (plus the tag in
  ``spacer:held:<lease>``) in one transaction, so no message a leased
  worker holds is ever unowned. Messages of lease-less workers (LEASE_TTL=0,
  an older version, another app on the same database) have no owner and are
  never touched by a reaper: they keep kombu's visibility timeout.
* **A lease is a heartbeat, not a clock.** Every ``ttl / 6`` seconds a
  thread of the worker's main process sets ``spacer:beats[<lease>]`` to the
  next value of a Redis counter. A reaper calls a lease dead when it saw the
  same beat for ``ttl`` seconds of *its own* monotonic clock while it could
  reach Redis. No wall clock (worker's or Redis's) is compared, so clock
  jumps and failover to a replica with another clock change nothing; a
  reaper that was cut off from Redis starts observing afresh.
* **Restores are fenced.** A dead lease's held set is kept until every tag
  in it is resolved. Each tag is restored by one Lua script that re-checks,
  atomically, that the lease's beat is still the one judged dead, that the
  tag is still owned by that lease and that the unacked entry is the one
  read; then it moves the message back to its queue and drops the owner. A
  paused reaper, a second reaper, or a worker that renewed meanwhile makes
  the script do nothing.
* **Acks and requeues are fenced.** A leased worker acks (or requeues) a
  tag only while it owns it, so a stalled worker that wakes up after its
  message was restored and delivered elsewhere cannot delete the new
  holder's unacked entry. The visibility-timeout restore leaves owned tags
  alone (their owner's lease covers them).

Commit fencing (what a stalled worker may still write) is in
:mod:`spacer_worker.delivery`. Redis transport only (no ``global_keyprefix``);
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
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from kombu.transport import redis as kombu_redis

from spacer_worker import config
from spacer_worker.metrics import recording

logger = logging.getLogger(__name__)

BEATS_KEY = 'spacer:beats'            # hash: lease id -> last beat
BEAT_SEQ_KEY = 'spacer:beat:seq'      # counter: beats never repeat
OWNER_KEY = 'spacer:owner'            # hash: delivery tag -> lease id
HELD_KEY = 'spacer:held:{}'           # lease id -> set of delivery tags
LEASE_KEY = 'spacer:lease:{}'         # lease id -> JSON info, with TTL
COMMIT_KEY = 'spacer:commit:{}'       # delivery tag -> committed result
RELEASED = 'released'                 # beat of a cleanly closed lease
# Written as well for workers of the previous version during a rolling
# upgrade: their reapers requeue any unacked tag missing from these.
OLD_LEASES_KEY = 'spacer:leases'      # zset: lease id -> expiry
OLD_CLAIMS_KEY = 'spacer:claims:{}'   # set of tags, with TTL

_RENEW = """
local beat = redis.call('incr', KEYS[2])
redis.call('hset', KEYS[1], ARGV[1], beat)
redis.call('set', KEYS[4], ARGV[2], 'px', ARGV[3])
local now = redis.call('time')
redis.call('zadd', KEYS[5], now[1] + ARGV[3] / 1000, ARGV[1])
redis.call('del', KEYS[6])
local lost = {}
for i = 4, #ARGV do
    redis.call('sadd', KEYS[6], ARGV[i])
    if redis.call('hget', KEYS[3], ARGV[i]) ~= ARGV[1] then
        table.insert(lost, ARGV[i])
    end
end
if #ARGV >= 4 then redis.call('pexpire', KEYS[6], ARGV[3]) end
return {beat, lost}
"""

# KEYS: beats, owner, unacked, unacked_index, held, commit
# ARGV: tag, lease, beat ('' = the owner itself requeues), raw entry,
#       then pairs of (list, payload) to push to, 'L' or 'R' first.
_RESTORE = """
if ARGV[3] ~= '' and redis.call('hget', KEYS[1], ARGV[2]) ~= ARGV[3] then
    return 0
end
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then
    redis.call('srem', KEYS[5], ARGV[1])
    return -1
end
local raw = redis.call('hget', KEYS[3], ARGV[1])
if raw ~= ARGV[4] then
    if not raw then
        redis.call('hdel', KEYS[2], ARGV[1])
        redis.call('srem', KEYS[5], ARGV[1])
    end
    return -2
end
redis.call('hdel', KEYS[3], ARGV[1])
redis.call('zrem', KEYS[4], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('srem', KEYS[5], ARGV[1])
local side = ARGV[5]
for i = 6, #ARGV, 2 do
    if side == 'L' then
        redis.call('lpush', ARGV[i], ARGV[i + 1])
    else
        redis.call('rpush', ARGV[i], ARGV[i + 1])
    end
end
return 1
"""

# KEYS: owner, unacked, unacked_index, held, commit; ARGV: tag, lease
_ACK = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('srem', KEYS[4], ARGV[1])
redis.call('del', KEYS[5])
return 1
"""

# KEYS: beats, held; ARGV: lease, beat. A dead lease holding nothing goes.
_FORGET = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('scard', KEYS[2]) > 0 then return 0 end
redis.call('hdel', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class LeaseTimings:
    """All lease timings follow from the TTL."""

    ttl: float

    @property
    def tick(self) -> float:
        """Seconds between renewals (and between reaper passes): six beats
        per grace period, so a dead lease is seen within ``ttl + 2 tick``
        (4/3 ttl) of its last beat, and a live one never misses enough."""
        return self.ttl / 6

    @property
    def grace(self) -> float:
        """How long a beat must stay unchanged before its lease is dead."""
        return self.ttl

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))


# --- the lease of this process --------------------------------------------

_active_lease: str | None = None


def active_lease() -> str | None:
    """The lease id of this worker process (inherited by pool children)."""
    return _active_lease


def set_active_lease(lease_id: str | None) -> None:
    global _active_lease
    _active_lease = lease_id


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


def renew(client: Any, lease_id: str, tags: Iterable[str],
          timings: LeaseTimings, info: dict | None = None) -> list[str]:
    """Beat once; return the held tags this lease no longer owns (they were
    restored to their queue after the lease was judged dead)."""
    _, lost = client.eval(
        _RENEW, 6, BEATS_KEY, BEAT_SEQ_KEY, OWNER_KEY,
        LEASE_KEY.format(lease_id), OLD_LEASES_KEY,
        OLD_CLAIMS_KEY.format(lease_id),
        lease_id, json.dumps(info or {}), timings.ttl_ms, *sorted(tags))
    return [_text(t) for t in lost]


def release(client: Any, lease_id: str) -> None:
    """Close a lease (clean shutdown): what it still holds is restored by
    the next reaper pass, without waiting for the grace period."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(BEATS_KEY, lease_id, RELEASED)
    pipe.delete(LEASE_KEY.format(lease_id), OLD_CLAIMS_KEY.format(lease_id))
    pipe.zrem(OLD_LEASES_KEY, lease_id)
    pipe.execute()


@dataclass
class LeaseObserver:
    """What one reaper saw of every lease: (beat, when first seen), by the
    reaper's monotonic clock."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget everything (after losing Redis: the time apart from it
        says nothing about the other workers)."""
        self.seen.clear()

    def dead(self, beats: dict[str, str], now: float,
             grace: float) -> list[tuple[str, str]]:
        for lease in set(self.seen) - set(beats):
            del self.seen[lease]
        dead = []
        for lease, beat in beats.items():
            if beat == RELEASED:
                dead.append((lease, beat))
                continue
            previous = self.seen.get(lease)
            if previous is None or previous[0] != beat:
                self.seen[lease] = (beat, now)
            elif now - previous[1] >= grace:
                dead.append((lease, beat))
        return dead


def _restore_args(channel: Any, raw: str, leftmost: bool) -> list[str]:
    """The (list, payload) pairs kombu would push a restored message to."""
    from kombu.utils.json import dumps, loads

    payload, exchange, routing_key = loads(raw)
    try:
        payload['headers']['redelivered'] = True
        payload['properties']['delivery_info']['redelivered'] = True
    except (KeyError, TypeError):
        pass
    args = ['L' if leftmost else 'R']
    priority = channel._get_message_priority(payload, reverse=False)
    for queue in channel._lookup(exchange, routing_key):
        args += [channel._q_for_pri(queue, priority), dumps(payload)]
    return args


# What decoding an unacked entry that kombu did not write raises (Redis
# errors are none of these: a lost connection still stops the pass).
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def restore_tag(channel: Any, tag: str, lease_id: str, beat: str,
                leftmost: bool = False, client: Any = None) -> int:
    """Put one message back in its queue if ``lease_id`` still owns it (and,
    unless ``beat`` is '', still has that beat). 1 restored, 0 the lease
    lives, -1 owned by another or nobody, -2 acked or changed meanwhile."""
    client = client or channel.client
    raw = client.hget(channel.unacked_key, tag)
    if raw is None:
        extra: list[str] = ['', 'R']
    else:
        raw = _text(raw)
        extra = [raw, *_restore_args(channel, raw, leftmost)]
    return int(client.eval(
        _RESTORE, 6, BEATS_KEY, OWNER_KEY, channel.unacked_key,
        channel.unacked_index_key, HELD_KEY.format(lease_id),
        COMMIT_KEY.format(tag), tag, lease_id, beat, *extra))


def reap_once(channel: Any, observer: LeaseObserver, now: float,
              timings: LeaseTimings) -> list[str]:
    """One reaper pass at monotonic time ``now``; returns the delivery tags
    put back in their queue. ``channel`` is a kombu Redis channel."""
    client = channel.client
    beats = {_text(k): _text(v) for k, v in client.hgetall(BEATS_KEY).items()}
    restored = []
    for lease_id, beat in observer.dead(beats, now, timings.grace):
        held = HELD_KEY.format(lease_id)
        tags = sorted(_text(t) for t in client.smembers(held))
        if not tags:
            client.eval(_FORGET, 2, BEATS_KEY, held, lease_id, beat)
            continue
        for tag in tags:
            try:
                outcome = restore_tag(channel, tag, lease_id, beat)
            except _MALFORMED as e:
                # Redis is open to more than kombu: one entry that is not
                # kombu's must not stop every restore after it.
                logger.warning(
                    'Unacked entry %s of lease %s is not a kombu message '
                    '(%s: %s); its claim is dropped and the entry left to '
                    'the visibility timeout.', tag, lease_id,
                    type(e).__name__, e)
                pipe = client.pipeline(transaction=True)
                pipe.hdel(OWNER_KEY, tag)
                pipe.srem(held, tag)
                pipe.execute()
                continue
            if outcome == 1:
                restored.append(tag)
                logger.warning(
                    'Requeued message %s: worker lease %s stopped beating '
                    'for over %.0f s (the worker died, stalled or lost '
                    'Redis).', tag, lease_id, timings.grace)
    return restored


# --- the worker's kombu QoS -------------------------------------------------

class LeasedQoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, with claims and fenced acks.

    Behaves exactly as kombu's when this process holds no lease.
    """

    lease_id: str | None = None     # tests set one per channel

    def _lease(self) -> str | None:
        return self.lease_id or active_lease()

    def append(self, message: Any, delivery_tag: Any) -> None:
        lease = self._lease()
        if lease is None:
            return super().append(message, delivery_tag)
        from kombu.utils.json import dumps
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery['exchange'],
                     delivery['routing_key']])
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=True)
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, raw)
            pipe.hset(OWNER_KEY, delivery_tag, lease)
            pipe.sadd(HELD_KEY.format(lease), delivery_tag)
            pipe.execute()
        kombu_redis.virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        lease = self._lease()
        if lease is None:
            return super().ack(delivery_tag)
        self._fenced_ack(delivery_tag, lease)
        kombu_redis.virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        lease = self._lease()
        if lease is None:
            return super().reject(delivery_tag, requeue=requeue)
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        else:
            self._fenced_ack(delivery_tag, lease)
        kombu_redis.virtual.QoS.ack(self, delivery_tag)

    _visibility_pass = False

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        # kombu's visibility timeout: an owned message is its lease's
        # business (its owner may be running it, however long).
        self._visibility_pass = True
        try:
            super().restore_visible(*args, **kwargs)
        finally:
            self._visibility_pass = False

    def restore_by_tag(self, tag: Any, client: Any = None,
                       leftmost: bool = False) -> None:
        # Used by requeues, by the restore of held messages at shutdown and
        # by the visibility timeout. An owned tag is restored only by its
        # owner requeueing it (or, once the owner is dead, by a reaper).
        tag = _text(tag)
        with self.channel.conn_or_acquire(client) as client:
            owner = client.hget(OWNER_KEY, tag)
            if owner is None:
                return super().restore_by_tag(tag, client=client,
                                              leftmost=leftmost)
            if self._visibility_pass:
                return None
            lease = self._lease()
            if lease is None or _text(owner) != lease:
                return None
            restore_tag(self.channel, tag, lease, '', leftmost=leftmost,
                        client=client)

    def _fenced_ack(self, delivery_tag: Any, lease: str) -> None:
        tag = _text(delivery_tag)
        with self.channel.conn_or_acquire() as client:
            done = client.eval(
                _ACK, 5, OWNER_KEY, self.unacked_key, self.unacked_index_key,
                HELD_KEY.format(lease), COMMIT_KEY.format(tag), tag, lease)
        if not done:
            logger.warning(
                'Did not acknowledge message %s: this worker no longer holds '
                'it (its lease lapsed and the message was requeued).', tag)


def install_leased_qos() -> None:
    """Make every kombu Redis channel of this process use LeasedQoS."""
    kombu_redis.Channel.QoS = LeasedQoS


# --- the keeper thread ---------------------------------------------------------

class LeaseKeeper:
    """The thread that renews one worker's lease and runs the reaper."""

    def __init__(self, connect: Callable[[], Any], worker_id: str,
                 timings: LeaseTimings,
                 held: Callable[[], set[str]] = held_delivery_tags,
                 info: dict | None = None,
                 on_lost: Callable[[list[str]], None] | None = None) -> None:
        self.connect = connect          # -> kombu Connection (Redis)
        self.worker_id = worker_id
        self.timings = timings
        self.held = held
        self.info = info or {}
        self.on_lost = on_lost
        self.observer = LeaseObserver()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._renewed_at: float | None = None     # monotonic
        self._reported_lost: set[str] = set()

    def start(self) -> None:
        set_active_lease(self.worker_id)
        try:
            self.tick(reap=False)   # own the lease before consuming
        except Exception as e:
            logger.warning('First lease renewal of %s failed (%s: %s); the '
                           'keeper retries.', self.worker_id,
                           type(e).__name__, e)
            self._drop_connection()
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
        if release_lease:
            try:
                if self._connection is None:
                    self._connection = self.connect()
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

    def tick(self, now: float | None = None, reap: bool = True) -> list[str]:
        """Renew the lease, then reap; returns requeued tags. ``now`` is a
        monotonic time (tests inject it). Raises on connection errors."""
        now = time.monotonic() if now is None else now
        if self._connection is None:
            self._connection = self.connect()
        channel = self._connection.default_channel
        held = self.held()
        lost = renew(channel.client, self.worker_id, held, self.timings,
                     self.info)
        if self._renewed_at is not None and \
                now - self._renewed_at > self.timings.ttl:
            logger.warning(
                'Lease of worker %s lapsed for %.0f s (Redis unreachable or '
                'process stalled): tasks it held may have been requeued.',
                self.worker_id, now - self._renewed_at)
        self._renewed_at = now
        fresh = [t for t in lost if t not in self._reported_lost]
        self._reported_lost = set(lost)
        if fresh:
            logger.warning(
                'Worker %s lost %d message(s) it held (%s): they were '
                'requeued while its lease lapsed; their runs here will not '
                'commit.', self.worker_id, len(fresh), ', '.join(fresh))
            if self.on_lost is not None:
                self.on_lost(fresh)
        if not reap:
            return []
        restored = reap_once(channel, self.observer, now, self.timings)
        recording.leases_restored(len(restored))
        return restored

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.timings.tick):
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
                self.observer.reset()
                self._drop_connection()


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
        # Before the pool forks and the consumer connects: children inherit
        # the lease id, the consumer's channels claim what they receive.
        set_active_lease(worker_id)
        install_leased_qos()
        return LeaseKeeper(worker.app.connection_for_write, worker_id,
                           timings, info=info)
