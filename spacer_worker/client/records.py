"""Result-backend records read back by the web process, decoded within
bounds.

A record in Redis may be malformed or forged: a bug, a partial write,
another version, or anyone with the broker's password (docs/operations.md,
"The web process and records in Redis"). Celery's own ``backend.decode``
reads any size, nests as deep as the C decoder lets it, and since Celery
5.6 inflates any record that carries its in-band compression marker,
whatever the reader configured: an 8.7 KB record inflated to 3 GiB. So the
client reads records here instead:

* size first (``RECORD_MAX_BYTES``, also checked in Redis before the
  record is sent: :data:`READ`), then no compressed form unless
  ``RECORD_COMPRESSION`` names its method (inflated at most to the size
  bound), then JSON nesting (``RECORD_MAX_DEPTH``, counted on the bytes
  before any object is built), then the shape of Celery's meta: an object
  with a string ``status``, a string or no ``traceback``, and the
  ``task_id`` of the job it was read for.

Every refusal is a :class:`RecordError` naming what is wrong; nothing here
raises anything else. The depth count costs ~2% of ``json.loads``: 0.6 ms
against 29 ms for a 0.8 MB classification result (1000 points, 60
scores each).

Client side: standard library only.
"""

from __future__ import annotations

import json
import re
import zlib
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from spacer_worker import config
from spacer_worker.celery.inflation import InflationError, inflate_at_most
from spacer_worker.exceptions import ConfigError, RecordError

#: Celery's in-band marker of a compressed result (``result_compression``,
#: Celery >= 5.6): MAGIC + content type + NUL + body.
COMPRESSED_MAGIC = b'\x00celery-compressed\x00'

# Kombu's content types of compressed bodies, by the method names an
# operator lists in RECORD_COMPRESSION. Others (brotli, zstd) are refused.
_METHODS = {
    'application/x-gzip': 'zlib',   # kombu's 'gzip' and 'zlib' are zlib
    'application/x-bz2': 'bz2',
    'application/x-lzma': 'lzma',
    'application/x-xz': 'lzma',
}
_STATUS_MAX = 64
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# Brackets to +1 / -1 (a signed byte), everything else deleted.
_BRACKETS = bytes.maketrans(b'[{]}', b'\x01\x01\xff\xff')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b'[]{}')

# KEYS: record keys (at most coralnet.BATCH); ARGV: byte limit.
# -> per key: the record, false (none), or its length when over the limit
# (never sent: a 512 MB record costs the web process nothing).
READ = """
local limit = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
    local size = redis.call('strlen', key)
    if size > limit then
        out[i] = size
    else
        out[i] = redis.call('get', key)
    end
end
return out
"""


@dataclass(frozen=True)
class RecordLimits:
    """The bounds a record is read within (settings, read when needed)."""

    max_bytes: int
    max_depth: int
    compression: frozenset[str]

    @classmethod
    def from_settings(cls) -> RecordLimits:
        size, depth = config.get('RECORD_MAX_BYTES'), \
            config.get('RECORD_MAX_DEPTH')
        for name, value in (('RECORD_MAX_BYTES', size),
                            ('RECORD_MAX_DEPTH', depth)):
            if value <= 0:
                raise ConfigError(f'{name} must be a positive integer, got '
                                  f'{value!r}.')
        methods = frozenset(m.strip().lower() for m in str(
            config.get('RECORD_COMPRESSION') or '').split(',') if m.strip())
        unknown = methods - set(_METHODS.values())
        if unknown:
            raise ConfigError(f"RECORD_COMPRESSION: unknown method(s) "
                              f"{', '.join(sorted(unknown))}; expected "
                              f"zlib, bz2 or lzma.")
        return cls(size, depth, methods)


def oversized(size: int, limits: RecordLimits, what: str) -> RecordError:
    return RecordError(f'{what} is {size} bytes, over RECORD_MAX_BYTES '
                       f'({limits.max_bytes}); it was not read.')


def _inflate(data: bytes, limits: RecordLimits, what: str) -> bytes:
    """A compressed record's body, only where the operator allowed its
    method, and never past RECORD_MAX_BYTES."""
    content_type, _, body = data[len(COMPRESSED_MAGIC):].partition(b'\x00')
    name = content_type.decode('ascii', 'replace')[:64]
    method = _METHODS.get(name)
    if method is None or method not in limits.compression:
        raise RecordError(
            f'{what} is compressed ({name!r}); this client reads compressed '
            f'records only for the methods RECORD_COMPRESSION lists '
            f'({", ".join(sorted(limits.compression)) or "none"}).')
    # bz2 and lzma only when asked for (a Python may be built without).
    if method == 'bz2':
        import bz2
        inflater: Any = bz2.BZ2Decompressor()
    elif method == 'lzma':
        import lzma
        inflater = lzma.LZMADecompressor()
    else:
        inflater = zlib.decompressobj()
    try:
        return inflate_at_most(inflater, body, limits.max_bytes,
                               method=method, setting='RECORD_MAX_BYTES')
    except InflationError as e:
        raise RecordError(f'{what} {e}; it was not read.') from e


def json_depth(data: bytes) -> int:
    """The deepest nesting of JSON ``data``, counted on the bytes (strings
    removed) before anything is built."""
    brackets = _STRINGS.sub(b'', data).translate(_BRACKETS, _NOT_BRACKETS)
    return max(accumulate(array('b', brackets)), default=0)


def decode_json(raw: Any, limits: RecordLimits, what: str) -> Any:
    """JSON of a record within the bounds; RecordError otherwise."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raise oversized(raw, limits, what)   # READ's answer for a big one
    if isinstance(raw, str):
        raw = raw.encode('utf-8', 'surrogatepass')
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise RecordError(f'{what} is a {type(raw).__name__}, not bytes.')
    data = bytes(raw)
    if len(data) > limits.max_bytes:
        raise oversized(len(data), limits, what)
    if data.startswith(COMPRESSED_MAGIC):
        data = _inflate(data, limits, what)
    depth = json_depth(data)
    if depth > limits.max_depth:
        raise RecordError(f'{what} nests {depth} deep, over '
                          f'RECORD_MAX_DEPTH ({limits.max_depth}); it was '
                          f'not decoded.')
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError too
        raise RecordError(f'{what} is not JSON: {str(e)[:200]}') from e


def decode_meta(raw: Any, task_id: str,
                limits: RecordLimits | None = None) -> dict:
    """Celery's meta of ``task_id`` from its raw record, checked: an
    object, a string status, a string or no traceback, this task's id."""
    limits = limits or RecordLimits.from_settings()
    what = f'The result record of task {task_id}'
    meta = decode_json(raw, limits, what)
    if not isinstance(meta, dict):
        raise RecordError(f'{what} is a JSON {type(meta).__name__}, not an '
                          f'object.')
    status = meta.get('status', 'PENDING')
    if not isinstance(status, str) or not 0 < len(status) <= _STATUS_MAX:
        raise RecordError(f'{what} has no readable status (a '
                          f'{type(status).__name__}).')
    if not isinstance(meta.get('traceback'), (str, type(None))):
        raise RecordError(f'{what} has a traceback that is not text.')
    owner = meta.get('task_id')
    if owner is not None and owner != task_id:
        raise RecordError(f'{what} was written for another task '
                          f'({str(owner)[:80]!r}); it is not this job\'s.')
    return meta
