"""Inflating a compressed record read from Redis, never past a bound.

A record in Redis is untrusted: a few kilobytes can inflate to gigabytes.
The stored jobs of the books (:mod:`.books`) and the result records the
client reads (:mod:`spacer_worker.client.records`) both inflate through
:func:`inflate_at_most`, and name their own setting in the error.
"""

from __future__ import annotations

from typing import Any


class InflationError(ValueError):
    """Why a compressed body was not inflated (its reason is the text)."""


def inflate_at_most(inflater: Any, body: bytes, limit: int, *,
                    method: str, setting: str) -> bytes:
    """``body`` inflated by ``inflater`` (a ``method`` decompressor: zlib,
    bz2 or lzma), producing at most ``limit`` bytes (the ``setting``).
    InflationError when it is not a valid stream, inflates past the limit
    or is cut short."""
    try:
        out = inflater.decompress(body, limit + 1)
    except Exception as e:  # zlib.error, OSError, EOFError, LZMAError...
        raise InflationError(f'is not a valid {method} stream: {e}') from e
    if len(out) > limit or getattr(inflater, 'unconsumed_tail', b''):
        raise InflationError(f'inflates past {setting} ({limit} bytes)')
    if not inflater.eof:
        raise InflationError(f'is a truncated {method} stream')
    return out
