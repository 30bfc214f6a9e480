"""The reaper and the lease keeper, driven directly against a real Redis.

Messages are published and consumed through kombu's own Redis transport;
each consumer's channel holds a lease (or none, as a lease-less worker).
Time is injected: the reaper's clock is a number the test advances, so no
test sleeps through a TTL.
"""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Producer, Queue

from spacer_worker.worker import leases
from spacer_worker.worker.leases import (
    LeaseKeeper,
    LeaseObserver,
    LeaseTimings,
    reap_once,
    renew,
)

TTL = 30.0
TIMINGS = LeaseTimings(TTL)


@pytest.fixture
def broker(broker_url):
    leases.install_leased_qos()
    connections = []

    def connect() -> Connection:
        connection = Connection(broker_url)
        connections.append(connection)
        return connection
    yield connect
    for connection in connections:
        connection.release()


def _queue() -> Queue:
    return Queue('work', Exchange('work', type='direct'), routing_key='work')


def publish(connect, count: int = 1) -> list[str]:
    ids = []
    with connect() as connection:
        producer = Producer(connection.default_channel)
        for _ in range(count):
            task_id = str(uuid.uuid4())
            producer.publish({'id': task_id}, exchange=_queue().exchange,
                             routing_key='work', declare=[_queue()],
                             serializer='json')
            ids.append(task_id)
    return ids


class Consumer:
    """One worker's consumer channel; ``lease`` None = a lease-less worker."""

    def __init__(self, connect, lease: str | None) -> None:
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.qos.lease_id = lease
        self.lease = lease
        self.queue = _queue()(self.channel)
        self.queue.declare()

    def take(self):
        message = self.queue.get(no_ack=False)
        assert message is not None, 'queue empty'
        return message

    def beat(self, tags=()) -> list[str]:
        return renew(self.channel.client, self.lease, tags, TIMINGS)


def reaper(connect):
    return connect().default_channel


def unacked(redis_db) -> set[str]:
    return {t.decode() for t in redis_db.hkeys('unacked')}


def queued(redis_db) -> int:
    return sum(redis_db.llen(k) for k in redis_db.keys('work*'))


def test_only_a_dead_lease_messages_are_reaped(broker, redis_db):
    # Given a leased worker and a lease-less one, each holding a message
    publish(broker, 2)
    leased, leaseless = Consumer(broker, 'w-leased'), Consumer(broker, None)
    mine, other = leased.take(), leaseless.take()
    leased.beat([mine.delivery_tag])
    channel, observer = reaper(broker), LeaseObserver()

    # When the leased worker stops beating for longer than the grace
    assert reap_once(channel, observer, 0.0, TIMINGS) == []
    assert reap_once(channel, observer, TTL - 1, TIMINGS) == []
    restored = reap_once(channel, observer, TTL + 1, TIMINGS)

    # Then its message, and only its message, is back in the queue
    assert restored == [mine.delivery_tag]
    assert unacked(redis_db) == {other.delivery_tag}
    assert queued(redis_db) == 1
    # and the lease-less worker's message is never touched, however long
    assert reap_once(channel, observer, 100 * TTL, TIMINGS) == []
    assert unacked(redis_db) == {other.delivery_tag}


def test_a_beating_lease_is_never_reaped_even_when_the_clock_jumps(
        broker, redis_db):
    publish(broker)
    worker = Consumer(broker, 'w-alive')
    message = worker.take()
    channel, observer = reaper(broker), LeaseObserver()
    now = 0.0
    for _ in range(20):
        worker.beat([message.delivery_tag])
        assert reap_once(channel, observer, now, TIMINGS) == []
        # The reaper's clock jumps by several TTLs between passes (say a
        # VM paused); a beat that changed since the last look is alive.
        now += 5 * TTL
    assert unacked(redis_db) == {message.delivery_tag}


def test_fresh_deliveries_are_claimed_before_any_beat(broker, redis_db):
    # A worker killed before its keeper ever ran: the message it took was
    # claimed in the same transaction that made it unacked.
    publish(broker)
    doomed = Consumer(broker, 'w-doomed')
    message = doomed.take()
    assert redis_db.hget(leases.OWNER_KEY, message.delivery_tag) == \
        b'w-doomed'
    doomed.beat()
    channel, observer = reaper(broker), LeaseObserver()
    reap_once(channel, observer, 0.0, TIMINGS)
    assert reap_once(channel, observer, TTL, TIMINGS) == \
        [message.delivery_tag]


def test_a_stalled_reaper_cannot_restore_a_message_taken_again(
        broker, redis_db):
    # Given two reapers that both judged worker A dead
    publish(broker)
    a = Consumer(broker, 'w-a')
    message = a.take()
    a.beat()
    fast, slow = LeaseObserver(), LeaseObserver()
    channel = reaper(broker)
    for observer in (fast, slow):
        reap_once(channel, observer, 0.0, TIMINGS)
    dead = slow.dead(
        {k.decode(): v.decode()
         for k, v in redis_db.hgetall(leases.BEATS_KEY).items()},
        TTL + 1, TIMINGS.grace)
    assert dead
    # When one reaper restores the message and worker B takes it
    assert reap_once(channel, fast, TTL + 1, TIMINGS) == \
        [message.delivery_tag]
    b = Consumer(broker, 'w-b')
    again = b.take()
    assert again.delivery_tag == message.delivery_tag
    # Then the stalled reaper, waking with its stale verdict, does nothing
    assert reap_once(channel, slow, TTL + 2, TIMINGS) == []
    (lease_id, beat), = dead
    assert leases.restore_tag(channel, message.delivery_tag, lease_id,
                              beat) in (0, -1)      # not restored
    assert unacked(redis_db) == {message.delivery_tag}
    assert queued(redis_db) == 0


def test_a_lease_renewed_between_verdict_and_restore_keeps_its_message(
        broker, redis_db):
    publish(broker)
    a = Consumer(broker, 'w-a')
    message = a.take()
    a.beat()
    channel, observer = reaper(broker), LeaseObserver()
    reap_once(channel, observer, 0.0, TIMINGS)
    (lease_id, beat), = observer.dead(
        {'w-a': redis_db.hget(leases.BEATS_KEY, 'w-a').decode()},
        TTL + 1, TIMINGS.grace)
    a.beat()     # A wakes up just before the restore
    assert leases.restore_tag(channel, message.delivery_tag, lease_id,
                              beat) == 0
    assert unacked(redis_db) == {message.delivery_tag}


def test_a_stalled_worker_cannot_ack_away_the_new_holders_message(
        broker, redis_db):
    # Given A's message requeued after A stopped beating, and taken by B
    publish(broker)
    a = Consumer(broker, 'w-a')
    stale = a.take()
    a.beat()
    channel, observer = reaper(broker), LeaseObserver()
    reap_once(channel, observer, 0.0, TIMINGS)
    reap_once(channel, observer, TTL + 1, TIMINGS)
    b = Consumer(broker, 'w-b')
    fresh = b.take()
    b.beat([fresh.delivery_tag])

    # When A wakes up and acks (or requeues) its old copy
    assert a.beat([stale.delivery_tag]) == [stale.delivery_tag]   # lost
    stale.ack()
    a.channel.qos.restore_by_tag(stale.delivery_tag)

    # Then B's unacked entry stays, and B's ack removes it
    assert unacked(redis_db) == {fresh.delivery_tag}
    assert queued(redis_db) == 0
    # B dies now: its message is still recoverable
    reap_once(channel, observer, 2 * TTL + 2, TIMINGS)
    assert reap_once(channel, observer, 3 * TTL + 3, TIMINGS) == \
        [fresh.delivery_tag]


def test_visibility_timeout_leaves_owned_messages_alone(broker, redis_db):
    # kombu's visibility-timeout restore runs on every worker; a message a
    # leased worker holds is its lease's business, however long it runs.
    publish(broker, 2)
    leased, leaseless = Consumer(broker, 'w-long'), Consumer(broker, None)
    owned, unowned = leased.take(), leaseless.take()
    # Neither another worker's pass nor the owner's own (it may run the
    # message for longer than the visibility timeout) requeues it.
    for restorer in (Consumer(broker, 'w-other'), leased):
        restorer.channel.qos.visibility_timeout = -1   # everything is "old"
        restorer.channel.qos.restore_visible(interval=1)
    assert unacked(redis_db) == {owned.delivery_tag}
    assert unowned.delivery_tag not in unacked(redis_db)


def test_released_lease_is_reaped_without_waiting(broker, redis_db):
    publish(broker)
    a = Consumer(broker, 'w-a')
    message = a.take()
    a.beat()
    leases.release(redis_db, 'w-a')
    assert reap_once(reaper(broker), LeaseObserver(), 0.0, TIMINGS) == \
        [message.delivery_tag]


def test_keeper_reaps_and_reports_lost_tags(broker, redis_db):
    # The keeper, ticked by hand with injected time: B's keeper reaps dead
    # A; A's keeper, ticked again, reports the tag it lost.
    publish(broker)
    a = Consumer(broker, 'w-a')
    message = a.take()
    lost = []
    keeper_a = LeaseKeeper(broker, 'w-a', TIMINGS,
                           held=lambda: {message.delivery_tag},
                           on_lost=lost.extend)
    keeper_b = LeaseKeeper(broker, 'w-b', TIMINGS, held=set)
    keeper_a.tick(now=0.0)
    assert keeper_b.tick(now=0.0) == []
    assert keeper_b.tick(now=TTL / 3) == []
    assert keeper_b.tick(now=TTL + 1) == [message.delivery_tag]
    keeper_a.tick(now=TTL + 2)
    assert lost == [message.delivery_tag]
    # A dead lease that holds nothing any more is forgotten
    keeper_a.close()
    keeper_b.tick(now=TTL + 3)
    assert redis_db.hget(leases.BEATS_KEY, 'w-a') is None
    keeper_b.close()


def test_a_reaper_that_lost_redis_observes_afresh(broker, redis_db):
    publish(broker)
    a = Consumer(broker, 'w-a')
    a.take()
    a.beat()
    channel, observer = reaper(broker), LeaseObserver()
    reap_once(channel, observer, 0.0, TIMINGS)
    observer.reset()        # what the keeper does on a connection error
    assert reap_once(channel, observer, 10 * TTL, TIMINGS) == []
    assert len(unacked(redis_db)) == 1


@pytest.mark.parametrize('entry', [b'not json', b'[1, 2]', b'{"a": 1}'])
def test_a_malformed_unacked_entry_does_not_stop_the_reaper(
        broker, redis_db, entry):
    # Given a dead lease holding a real message, and a record planted in
    # Redis (another dead "lease" owning an unacked entry that is not
    # kombu's),
    publish(broker)
    leased = Consumer(broker, 'w-real')
    mine = leased.take()
    leased.beat([mine.delivery_tag])
    redis_db.hset('unacked', 'planted', entry)
    redis_db.hset(leases.OWNER_KEY, 'planted', 'w-planted')
    redis_db.sadd(leases.HELD_KEY.format('w-planted'), 'planted')
    redis_db.hset(leases.BEATS_KEY, 'w-planted', '1')
    channel, observer = reaper(broker), LeaseObserver()
    # when both stop beating,
    assert reap_once(channel, observer, 0.0, TIMINGS) == []
    restored = reap_once(channel, observer, TTL + 1, TIMINGS)
    # then the real message is requeued all the same, and the planted
    # entry is left where it was (kombu's visibility timeout has it).
    assert restored == [mine.delivery_tag]
    assert queued(redis_db) == 1
    assert unacked(redis_db) == {'planted'}
    # Its claim is dropped, so later passes do not trip on it again.
    assert redis_db.hget(leases.OWNER_KEY, 'planted') is None
    assert reap_once(channel, observer, 3 * TTL, TIMINGS) == []
