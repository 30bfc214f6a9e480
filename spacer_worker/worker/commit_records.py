"""Commit records read back from Redis: trusted no more than a message.

A commit record (``spacer:commit:<delivery tag>``, :mod:`.delivery`) tells
the worker that gets a message again which staged outputs to move where,
and which result to write, instead of running it twice. Anyone who can
write to the broker's Redis can write such a record, so:

* **It must be this run's.** Its result key is the one of this message's
  task id, and the task id it names is this message's.
* **With WORKER_SECRET set, it must carry its seal**: an HMAC-SHA256, under
  the secret, of the record, the delivery tag and the task id. A record
  planted without the secret, or copied from another message's, is
  refused. (Every worker sharing a broker needs the same secret.)
* **Every move is re-checked, sealed or not**, where it happens: a staged
  name is the one the worker derives from its destination
  (``.<name>.spacer-<16 hex>.staged`` beside it), and both lie where a
  message may write (FILESYSTEM_WRITE_ROOTS, S3_WRITE_BUCKETS,
  MEMORY_STORAGE_ALLOWED); a filesystem move uses the resolved paths. So
  without a secret no record can move a file outside the write roots, and
  a forged one can do no more there than a message could.

A refused record is dropped and the message runs as if it had never
committed (:func:`.delivery.begin`); the log says why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import LocationNotAllowedError

WRITABLE = ('filesystem', 's3', 'memory')
_STAGED = re.compile(r'\.(?P<name>.+)\.spacer-(?P<token>[0-9a-f]{16})\.staged')
_FIELDS = ('key', 'value', 'expires', 'staged', 'task_id')
_CONTEXT = b'spacer-worker commit record v1'


class RecordRefused(Exception):
    """A commit record that does not belong to this run, or names a move
    the worker may not make; the message runs again instead."""


def staged_key(key: str, token: str) -> str:
    """The hidden name an output is staged under, beside its destination."""
    head, sep, name = key.rpartition('/')
    return f'{head}{sep}.{name}.spacer-{token}.staged'


def _secret() -> bytes | None:
    value = config.get('WORKER_SECRET')
    return value.encode('utf-8') if value else None


def _mac(secret: bytes, record: dict, tag: str) -> str:
    body = json.dumps({k: record.get(k) for k in _FIELDS}, sort_keys=True,
                      separators=(',', ':'))
    data = b'\0'.join([_CONTEXT, tag.encode(), str(record.get('task_id')
                                                   ).encode(), body.encode()])
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def seal(record: dict, tag: str, task_id: str) -> dict:
    """``record`` bound to this message (its tag and task id) and, with
    WORKER_SECRET set, sealed under it."""
    sealed = {**record, 'task_id': task_id}
    secret = _secret()
    sealed['mac'] = _mac(secret, sealed, tag) if secret else None
    return sealed


def open_record(raw: Any, tag: str, task_id: str, result_key: str) -> dict:
    """The record ``raw`` read back for message ``tag``, after every check
    above; RecordRefused says which one failed."""
    try:
        record = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as e:
        raise RecordRefused(f'not JSON ({type(e).__name__})') from None
    if not isinstance(record, dict):
        raise RecordRefused(f'a JSON {type(record).__name__}, not an object')
    if not isinstance(record.get('key'), str) or \
            not isinstance(record.get('value'), str) or \
            not isinstance(record.get('staged'), list) or \
            not isinstance(record.get('expires'), (int, float, type(None))):
        raise RecordRefused('its fields are not those of a commit record')
    if record['key'] != result_key or record.get('task_id', task_id) != \
            task_id:
        raise RecordRefused(f'it is the record of another task '
                            f'({str(record.get("task_id"))[:64]!r})')
    secret = _secret()
    if secret is not None:
        mac = record.get('mac')
        if not isinstance(mac, str) or 'task_id' not in record or \
                not hmac.compare_digest(mac, _mac(secret, record, tag)):
            raise RecordRefused('its seal does not verify under this '
                                "worker's WORKER_SECRET")
    for item in record['staged']:
        try:
            checked_move(item)
        except LocationNotAllowedError as e:
            raise RecordRefused(str(e)) from None
    return record


@dataclass(frozen=True)
class Move:
    """One staged output's move into place, its keys checked."""

    storage: Any
    staged: str
    key: str
    sha256: str | None

    def pending(self) -> bool:
        return bool(self.storage.exists(self.staged))

    def done(self) -> bool:
        """The destination holds the staged content already (an earlier
        publish moved it); without a recorded hash, that it exists."""
        if not self.storage.exists(self.key):
            return False
        if self.sha256 is None:
            return True
        data = self.storage.load_bytes(self.key)
        return hashlib.sha256(data).hexdigest() == self.sha256

    def stage(self, data: bytes) -> None:
        """Write the staged copy (at its checked, resolved key)."""
        self.storage.store(self.staged, data)

    def run(self) -> None:
        self.storage.move(self.staged, self.key)


def checked_move(item: Any) -> Move:
    """The move one staged-output entry asks for, checked against the
    worker's write allowlists now; LocationNotAllowedError otherwise."""
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.storage.factory import storage_factory
    from spacer_worker.storage.sandbox import WRITE, Sandbox

    if not isinstance(item, dict):
        raise LocationNotAllowedError(f'staged entry {item!r:.80} is not an '
                                      f'object.')
    kind, bucket = item.get('type'), item.get('bucket')
    staged, key, digest = item.get('staged'), item.get('key'), \
        item.get('sha256')
    if kind not in WRITABLE or not isinstance(staged, str) or \
            not isinstance(key, str) or \
            not (bucket is None or isinstance(bucket, str)) or \
            not (digest is None or isinstance(digest, str)):
        raise LocationNotAllowedError(
            f'staged entry {str(item)[:200]!r} is not a move to a writable '
            f'storage.')
    match = _STAGED.fullmatch(staged.rpartition('/')[2])
    if match is None or staged_key(key, match['token']) != staged:
        raise LocationNotAllowedError(
            f'staged file {staged[:200]!r} is not the staged name of '
            f'{key[:200]!r}.')
    sandbox = Sandbox.from_settings()
    real_key = sandbox.check(DataLocation(kind, key, bucket), WRITE)
    real_staged = sandbox.check(DataLocation(kind, staged, bucket), WRITE)
    return Move(storage_factory(kind, bucket), real_staged, real_key, digest)
