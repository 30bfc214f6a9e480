"""Commit fencing: one delivery of a message commits, never two.

A worker that stalls (SIGSTOP, a healed network partition, a long GC)
for longer than its lease may find, when it wakes, that its message was
requeued and run elsewhere. Whatever it then writes would be a second
commit of the same message. So, inside a leased worker's task:

* **Outputs are staged.** A write to one of the message's output locations
  (feature file, classifier, valresult) goes to a hidden staged name beside
  it (``.<name>.spacer-<token>.staged``); nothing appears under the real
  name yet. Other writes (caches, checkpoints) go straight through, after a
  fence check.
* **The commit is one fenced Lua call.** When the task's final state
  (SUCCESS or FAILURE) is stored, a script checks, in the broker's Redis,
  that this worker's lease still owns the message's delivery tag and that
  its unacked entry exists, and only then records the commit
  (``spacer:commit:<tag>``: the result record and the staged outputs).
  Then the staged files are moved to their names and the result written.
* **A commit is rolled forward, not redone.** If the worker dies after the
  commit but before the ack, the next delivery of the same message finds
  the commit record, finishes its moves and result write, and acks without
  running the task again. The record is deleted with the ack. A record is
  trusted no more than a message (:mod:`.commit_records`: bound to the
  message, sealed under WORKER_SECRET when set, every move re-checked
  against the write roots); a refused one is dropped and the task runs.
* **A commit is all or nothing.** A success whose staged outputs are not
  all there when they are moved into place is published as a failure
  (:class:`OutputNotPublishedError`, ``FileNotFoundError`` on the last
  line), never as the success it was.
* **A lost delivery stops early.** Progress updates and storage writes
  check the fence (at most once a second); once the tag is owned by
  nobody or another lease, the task raises :class:`DeliveryLostError`,
  which is neither recorded nor acked, and its staged files are deleted.

The remaining window: a worker stalled for longer than the lease grace in
the instant between a passed fence check and the Redis write of a
*non-final* state (a progress record) can still write that one record.
Final results and outputs are covered.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery.signals import task_prerun

from spacer_worker.exceptions import OutputNotPublishedError, SpacerError
from spacer_worker.storage import blobs
from spacer_worker.worker import leases
from spacer_worker.worker.commit_records import (
    RecordRefused,
    checked_move,
    open_record,
    seal,
    staged_key,
)

logger = logging.getLogger(__name__)

COMMIT_TTL = 7 * 24 * 3600        # a commit record outlives any redelivery
CHECK_INTERVAL = 1.0              # seconds between fence checks on progress
AUDIT_KEY: str | None = None      # benchmarks count commits per task here

# KEYS: owner, unacked; ARGV: tag, lease
_FENCE = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('hexists', KEYS[2], ARGV[1]) == 0 then return 0 end
return 1
"""

# KEYS: owner, unacked, commit, audit; ARGV: tag, lease, record, ttl, task
# 1 committed, 0 the fence failed, -1 a record is there already
_COMMIT = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('hexists', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('set', KEYS[3], ARGV[3], 'nx', 'ex', ARGV[4]) == false then
    return -1
end
if KEYS[4] ~= '' then redis.call('hincrby', KEYS[4], ARGV[5], 1) end
return 1
"""

# KEYS: commit; ARGV: the record as read. Drops a refused record unless it
# changed meanwhile.
_DROP = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class DeliveryLostError(Exception):
    """This run's message was requeued (the worker's lease lapsed): the run
    stops without writing anything."""


@dataclass
class Delivery:
    """One run of one message on a leased worker."""

    tag: str
    lease: str
    task_id: str
    broker: Any                          # redis client of the broker
    unacked_key: str = 'unacked'
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    outputs: set = field(default_factory=set)
    staged: list = field(default_factory=list)
    # Clean-ups the run asked for once its outputs are committed
    # (storage.blobs.when_committed: a training's checkpoint).
    after_commit: list = field(default_factory=list)
    lost: bool = False
    committed: bool = False
    _checked_at: float = 0.0

    # --- the fence ------------------------------------------------------

    def holds(self) -> bool:
        return bool(self.broker.eval(
            _FENCE, 2, leases.OWNER_KEY, self.unacked_key, self.tag,
            self.lease))

    def check(self, force: bool = False) -> None:
        """Raise DeliveryLostError when this run lost its message."""
        if self.lost:
            raise DeliveryLostError(self._lost_text())
        now = time.monotonic()
        if not force and now - self._checked_at < CHECK_INTERVAL:
            return
        self._checked_at = now
        if not self.holds():
            self.lost = True
            self.discard()
            raise DeliveryLostError(self._lost_text())

    def _lost_text(self) -> str:
        return (f'Task {self.task_id}: message {self.tag} was requeued while '
                f'this worker could not renew its lease; this run stops '
                f'and writes nothing (another worker runs the message).')

    # --- outputs ------------------------------------------------------------

    def declare_outputs(self, locations: list[Any]) -> None:
        self.outputs = {_loc_id(loc) for loc in locations if loc is not None}

    def stage(self, loc: Any, data: bytes) -> bool:
        """Store an output under its staged name; False when ``loc`` is not
        an output of this message (the caller writes it directly)."""
        self.check(force=True)
        if _loc_id(loc) not in self.outputs:
            return False
        item = {'type': str(_value(loc.storage_type)),
                'bucket': getattr(loc, 'bucket_name', None),
                'staged': staged_key(loc.key, self.token), 'key': loc.key,
                'sha256': hashlib.sha256(data).hexdigest()}
        # Checked where it is written, as its commit checks it again.
        checked_move(item).stage(data)
        self.staged.append(item)
        return True

    def discard(self) -> None:
        """Delete this run's staged files (it will not commit)."""
        for item in self.staged:
            try:
                _storage(item).delete(item['staged'])
            except Exception as e:
                logger.warning('Could not delete staged file %s: %s',
                               item['staged'], e)
        self.staged = []

    # --- the commit ---------------------------------------------------------

    def commit(self, backend: Any, key: Any, value: Any, state: str,
               expires: Any) -> bool:
        """Record the final result under the fence, then publish it."""
        from celery import states

        if state == states.SUCCESS:
            gone = self._missing_outputs()
            if gone:
                value = failed_value(backend, value, gone)
                state = states.FAILURE
                expires = getattr(backend, 'failure_expires', expires)
        if state != states.SUCCESS:
            self.discard()          # a failed task publishes no output
        record = json.dumps(seal({
            'key': _text(key), 'value': _text(value), 'expires': expires,
            'staged': self.staged}, self.tag, self.task_id))
        won = self._record(record)
        if won == -1 and self._drop_foreign_record(_text(key)):
            won = self._record(record)
        if won != 1:
            self.lost = True
            self.discard()
            logger.warning('%s Its result was not stored.', self._lost_text())
            return False
        self.committed = True
        if not publish(backend, json.loads(record)):
            state = states.FAILURE
            self.discard()          # nothing of a failed commit stays
        if state == states.SUCCESS:
            self._clean_up()
        self.after_commit = []    # a failed run keeps what it left
        return True

    def _record(self, record: str) -> int:
        return int(self.broker.eval(
            _COMMIT, 4, leases.OWNER_KEY, self.unacked_key,
            leases.COMMIT_KEY.format(self.tag), AUDIT_KEY or '', self.tag,
            self.lease, record, COMMIT_TTL, self.task_id))

    def _drop_foreign_record(self, result_key: str) -> bool:
        """A record under this run's tag that this run did not write:
        dropped when it is not a valid record of this message (planted
        in Redis); True when it was."""
        name = leases.COMMIT_KEY.format(self.tag)
        raw = self.broker.get(name)
        if raw is None:
            return True
        try:
            open_record(raw, self.tag, self.task_id, result_key)
        except RecordRefused as e:
            logger.warning('Task %s (message %s): dropping a commit record '
                           'it did not write: %s.', self.task_id, self.tag, e)
            return bool(self.broker.eval(_DROP, 1, name, raw))
        return False

    def _missing_outputs(self) -> list[str]:
        """The staged outputs that are gone (checked before the commit)."""
        gone = []
        for item in self.staged:
            try:
                if not checked_move(item).pending():
                    gone.append(item['key'])
            except SpacerError as e:
                gone.append(f'{item.get("key")} ({e})')
        return gone

    def defer(self, cleanup: Any) -> bool:
        """Keep ``cleanup`` until this run's outputs are committed (it
        runs after a SUCCESS only)."""
        self.after_commit.append(cleanup)
        return True

    def _clean_up(self) -> None:
        cleanups, self.after_commit = self.after_commit, []
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception as e:  # the result is committed already
                logger.warning('Clean-up after the commit of task %s '
                               'failed: %s: %s', self.task_id,
                               type(e).__name__, e)


def publish(backend: Any, record: dict) -> bool:
    """Move a commit's staged outputs into place, then write its result (a
    client that sees the result finds the outputs); repeating it is
    harmless (an output an earlier publish moved is recognised by its
    sha256). Every move is checked against the write roots here. All or
    nothing: when an output is neither staged nor in place, the result
    written is an OutputNotPublishedError failure (returns False)."""
    gone: list[str] = []
    try:
        moves = [checked_move(item) for item in record['staged']]
    except SpacerError as e:
        moves, gone = [], [str(e)]
    if not gone:
        gone = [m.key for m in moves if not m.pending() and not m.done()]
    for move in [] if gone else moves:
        try:
            move.run()
        except FileNotFoundError:
            if not move.done():     # else: moved by an earlier publish
                gone.append(move.key)
    if gone:
        backend.set(record['key'], failed_value(backend, record['value'],
                                                gone),
                    expires=getattr(backend, 'failure_expires', None) or
                    record['expires'])
        return False
    backend.set(record['key'], record['value'], expires=record['expires'])
    return True


def failed_value(backend: Any, value: Any, gone: list[str]) -> str:
    """The stored result ``value`` of a success turned into the failure
    of a commit whose outputs ``gone`` were not all published."""
    from celery import states

    from spacer_worker.exceptions.failures import failure_text, to_wire

    error = OutputNotPublishedError(
        f'The job finished, but {len(gone)} of its outputs could not be '
        f'published (their staged copies were gone when the commit moved '
        f'them into place): {", ".join(gone)[:500]}. The job failed as a '
        f'whole; run it again.')
    logger.error('%s', error)
    try:
        meta = backend.decode(value)
    except Exception:  # a record's value we cannot read: a bare failure
        meta = None
    if not isinstance(meta, dict):
        meta = {'children': [], 'date_done': None}
    meta['status'] = states.FAILURE
    meta['result'] = backend.prepare_exception(to_wire(error))
    meta['traceback'] = failure_text(error)
    return backend.encode(meta)


def _storage(item: dict) -> Any:
    from spacer_worker.storage.factory import storage_factory
    return storage_factory(item['type'], item['bucket'])


def _value(x: Any) -> Any:
    return getattr(x, 'value', x)


def _loc_id(loc: Any) -> tuple:
    return (str(_value(loc.storage_type)), getattr(loc, 'bucket_name', None),
            loc.key)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_OUTPUT_FIELDS = {
    'ExtractFeaturesMsg': ('feature_loc',),
    'TrainClassifierMsg': ('model_loc', 'valresult_loc'),
}


def output_locations(msg: Any) -> list[Any]:
    """Where a message's task writes its results (PySpacer's fields)."""
    found = [getattr(msg, name, None)
             for name in _OUTPUT_FIELDS.get(type(msg).__name__, ())]
    for task in getattr(msg, 'tasks', None) or []:
        found += output_locations(task)
    return [loc for loc in found if loc is not None]


# --- the current delivery of this process -------------------------------------

_current: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    'spacer_delivery', default=None)
_brokers: dict[str, Any] = {}


def current() -> Delivery | None:
    return _current.get()


def _set(delivery: Delivery | None) -> None:
    _current.set(delivery)
    blobs.write_guard.set(None if delivery is None else delivery.stage)
    blobs.commit_hook.set(None if delivery is None else delivery.defer)


def begin(task: Any) -> Delivery | None:
    """Start fencing the run of ``task.request``; None without a lease.

    Raises celery's Ignore when the message was committed by an earlier
    delivery (after finishing that commit): it is acked, not run again.
    """
    _set(None)
    lease = leases.active_lease()
    request = task.request
    tag = (getattr(request, 'properties', None) or {}).get('delivery_tag')
    if lease is None or not tag or request.is_eager or \
            request.called_directly:
        return None
    broker = _broker(task.app)
    delivery = Delivery(tag=str(tag), lease=lease, task_id=request.id,
                        broker=broker)
    name = leases.COMMIT_KEY.format(tag)
    raw = broker.get(name)
    if raw is not None:
        from celery.exceptions import Ignore
        try:
            record = open_record(raw, str(tag), request.id,
                                 _text(task.backend.get_key_for_task(
                                     request.id)))
        except RecordRefused as e:
            logger.warning('Task %s (message %s): ignoring the commit record '
                           'found under its delivery tag (%s); the task runs '
                           'again.', request.id, tag, e)
            broker.eval(_DROP, 1, name, raw)
        else:
            logger.warning('Task %s (message %s) was committed by an earlier '
                           'delivery; finishing that commit instead of '
                           'running it again.', request.id, tag)
            publish(task.backend, record)
            raise Ignore()
    _set(delivery)
    delivery.check(force=True)      # woke up after losing it: stop now
    return delivery


@task_prerun.connect
def _new_run(**_: Any) -> None:
    # Before a run stores anything (STARTED): a retry of a task runs under
    # the same task id in the same pool process, after a run whose context
    # Celery never closed (no after_return on a retry).
    end()


def end() -> None:
    delivery = _current.get()
    if delivery is not None and not delivery.committed:
        delivery.discard()
    _set(None)


def _broker(app: Any) -> Any:
    url = str(app.conf.broker_url)
    client = _brokers.get(url)
    if client is None:
        with app.connection_for_write() as connection:
            client = connection.default_channel.client
            # The channel's client outlives the connection object here:
            # keep its pool, not the kombu connection.
            client = type(client)(connection_pool=client.connection_pool)
        _brokers[url] = client
    return client


# --- the result backend ---------------------------------------------------------

class FencedBackendMixin:
    """Result writes of a fenced run: final states commit under the fence,
    progress states are written only while the run holds its message."""

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        from celery import states

        delivery = _current.get()
        if delivery is None or _text(key) != _text(
                self.get_key_for_task(delivery.task_id)):
            return super()._set_with_state(key, value, state)
        if state in states.READY_STATES:
            expires = self.failure_expires if state == states.FAILURE \
                else self.expires
            delivery.commit(self, key, value, state, expires)
            return None
        delivery.check(force=True)
        return super()._set_with_state(key, value, state)


_fenced: dict[int, Any] = {}


def fenced_backend(app: Any) -> Any:
    """This app's result backend with fenced writes and finished marks
    (worker.finished; Redis backends only)."""
    from celery.backends.redis import RedisBackend

    base = app.backend
    if not isinstance(base, RedisBackend):
        return base
    backend = _fenced.get(id(app))
    if backend is None:
        from celery.app import backends

        from spacer_worker.worker.finished import FinishedMarkMixin
        cls = type(f'Fenced{type(base).__name__}',
                   (FinishedMarkMixin, FencedBackendMixin, type(base)), {})
        _, url = backends.by_url(app.conf.result_backend, app.loader)
        backend = cls(app=app, url=url)
        _fenced[id(app)] = backend
    return backend
