"""A CoralNet queue's job kept once, in its books; the broker carries a
reference, and the worker marks the job finished where the books find it.

``contrib.coralnet.CeleryQueue`` keeps each JobMsg in its ``<prefix>msgs``
hash (it needs it to answer a job that failed without a result). Sending
it through the broker as well doubled Redis per queued job (10.8 KB for a
3.2 KB 200-point extraction job, issue 30). So the hash holds the job,
zlib-compressed (a 200-point extraction JobMsg: 3.2 KB -> ~1.3 KB), and the
broker message carries only::

    {'spacer_books': {'version': 1, 'prefix': '<prefix>'},
     'task_name': 'extract_features'}     # routing reads the task_name

The worker reads ``<prefix>msgs[<its own task id>]`` from the result
backend's Redis (never another task's entry), bounded by
``PAYLOAD_MAX_BYTES`` when it inflates it. Workers must be upgraded
before the clients that send references.

When a job's final state (SUCCESS, FAILURE, REVOKED) is stored, the worker
adds its id to ``<prefix>done`` (a sorted set scored by finish time, so
the collector pops the oldest first), if the job is still on the books:
the message header ``spacer_books`` names the prefix. A collect cycle then
costs what finished, not what waits; what no worker could mark (a lost
result, a job revoked before any worker saw it) is found by the
collector's bounded sweep (``CeleryQueue.sweep_batch``).

Client side: nothing heavy at import (the client extra only).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from typing import Any

from spacer_worker import config
from spacer_worker.celery.inflation import InflationError, inflate_at_most
from spacer_worker.exceptions import MessageError, PayloadError

REF_KEY = 'spacer_books'
HEADER = 'spacer_books'          # message header: the books' prefix
VERSION = 1
_COMPRESSED = b'z1:'             # a stored job: marker + zlib stream
_PREFIX = re.compile(r'^[!-~]{1,200}$')   # printable ASCII, no spaces

# KEYS: info, done; ARGV: task id, finish time. Marks only a job still on
# the books, so a late or forged mark leaves nothing behind.
_MARK = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 1 then
    return redis.call('zadd', KEYS[2], 'NX', ARGV[2], ARGV[1])
end
return 0
"""


def msgs_key(prefix: str) -> str:
    return prefix + 'msgs'


def info_key(prefix: str) -> str:
    return prefix + 'info'


def done_key(prefix: str) -> str:
    return prefix + 'done'


def checked_prefix(prefix: Any) -> str:
    """A books prefix from a message, refused unless it is a short
    printable string (messages are untrusted)."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise MessageError(f'{REF_KEY}: the books prefix must be 1-200 '
                           f'printable characters without spaces, got '
                           f'{str(prefix)[:80]!r}.')
    return prefix


def reference(prefix: str, payload: dict) -> dict:
    """What the broker carries instead of ``payload`` (a JobMsg's JSON or
    an offload reference), once it is stored under ``prefix``."""
    ref: dict[str, Any] = {REF_KEY: {'version': VERSION,
                                     'prefix': checked_prefix(prefix)}}
    if 'task_name' in payload:
        ref['task_name'] = payload['task_name']
    return ref


def is_reference(payload: Any) -> bool:
    return isinstance(payload, dict) and REF_KEY in payload


def encode_job(payload: Any, encoded: bytes | None = None) -> bytes:
    """The stored form of a job's JSON (``encoded``, when the caller has
    it): compressed, marked; an offload reference stays JSON text (small,
    and its owner finds it by its first byte when it confirms the job).
    Level 1: 200 random points compress to 1.2 KB at level 1 or 6 alike."""
    data = json.dumps(payload, separators=(',', ':')).encode() \
        if encoded is None else encoded
    if isinstance(payload, dict) and 'spacer_payload' in payload:
        return data
    return _COMPRESSED + zlib.compress(data, 1)


def decode_job(raw: bytes | str, limit: int,
               setting: str = 'PAYLOAD_MAX_BYTES') -> Any:
    """A stored job back as JSON, inflating at most ``limit`` bytes (a
    record read from Redis is untrusted; ``setting`` names the bound in the
    error); JSON text of the earlier format is read as it is. PayloadError
    when it is neither."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if data.startswith(_COMPRESSED):
        try:
            data = inflate_at_most(zlib.decompressobj(),
                                   data[len(_COMPRESSED):], limit,
                                   method='zlib', setting=setting)
        except InflationError as e:
            raise PayloadError(f'A stored job {e}; it was not read.') from e
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise PayloadError(f'A stored job is not JSON: {e}') from e


def fetch(redis: Any, ref: dict, task_id: str, limit: int) -> Any:
    """The job a reference stands for: this task's own entry in the books
    (the worker side)."""
    info = ref.get(REF_KEY)
    if not isinstance(info, dict) or info.get('version') != VERSION:
        raise PayloadError(f'{REF_KEY} must be an object of version '
                           f'{VERSION}, got {str(info)[:80]!r}.')
    prefix = checked_prefix(info.get('prefix'))
    raw = redis.hget(msgs_key(prefix), task_id)
    if raw is None:
        raise PayloadError(
            f'Task {task_id}: its job is not in the books {prefix!r} (it '
            f'was collected, cancelled, or the books were cleared); there '
            f'is nothing to run.')
    return decode_job(raw, limit)


def mark_finished(redis: Any, prefix: Any, task_id: str) -> bool:
    """Tell the books under ``prefix`` that ``task_id`` has its final
    state (stored just before). False when the prefix is not valid or the
    job is no longer on the books."""
    try:
        prefix = checked_prefix(prefix)
    except MessageError:
        return False
    return bool(redis.eval(_MARK, 2, info_key(prefix), done_key(prefix),
                           task_id, repr(time.time())))


def read_limit() -> int:
    """How many bytes a stored job may inflate to (PAYLOAD_MAX_BYTES)."""
    return int(config.get('PAYLOAD_MAX_BYTES'))


__all__ = ['HEADER', 'REF_KEY', 'checked_prefix', 'decode_job', 'done_key',
           'encode_job', 'fetch', 'info_key', 'is_reference', 'mark_finished',
           'msgs_key', 'read_limit', 'reference']
