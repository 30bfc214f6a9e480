"""What a message from the broker may touch: the operator's allowlists.

Anyone who can write to Redis can write a message, so a worker treats the
locations in one as untrusted. The Celery task adapters run each task body
inside :func:`untrusted`; while it is active, every read and write through
:mod:`spacer_worker.storage.blobs` goes through the :class:`Sandbox`:

* filesystem: the real path (symbolic links resolved) must lie under
  FILESYSTEM_READ_ROOTS or FILESYSTEM_WRITE_ROOTS (a write root is readable
  too); reads take regular files only and never follow a link as the last
  component; writes never replace a link;
* s3: the bucket, and the key's prefix if one is given, must be listed in
  S3_READ_BUCKETS / S3_WRITE_BUCKETS (``bucket`` or ``bucket/prefix``);
* url: every connection is checked by :mod:`.netguard`, and every failure
  reads the same (refused, unreachable, not found), so a message cannot use
  the worker as a port scanner; the log keeps the reason. Only a 5xx or
  429 answer from an allowed server stays transient, and is retried;
* memory: only with MEMORY_STORAGE_ALLOWED.

An unset allowlist allows nothing, and the error names the setting to set.
Outside :func:`untrusted` nothing is checked: a direct call of
``spacer_worker.tasks`` trusts its caller, as PySpacer does. Threads do not
inherit the sandbox by themselves: code that fans work out to threads runs
each job in a copy of the caller's context (:func:`in_context`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from spacer_worker import config
from spacer_worker.exceptions import (
    ConfigError,
    DataLimitError,
    LocationNotAllowedError,
    TransientError,
    URLDownloadError,
)
from spacer_worker.storage.factory import storage_for
from spacer_worker.storage.filesystem import read_file
from spacer_worker.storage.netguard import HostGuard
from spacer_worker.storage.url import URLStorage

logger = logging.getLogger(__name__)

T = TypeVar('T')
E = TypeVar('E', bound=BaseException)

ENV = config.ENV_PREFIX
READ, WRITE = 'read', 'write'

_current: contextvars.ContextVar[Sandbox | None] = contextvars.ContextVar(
    'spacer_worker_sandbox', default=None)


@dataclass(frozen=True)
class S3Grant:
    """One S3_*_BUCKETS entry: a bucket, optionally limited to a prefix."""

    bucket: str
    prefix: str = ''

    @classmethod
    def parse(cls, entry: str, setting: str) -> S3Grant:
        bucket, _, prefix = entry.strip().partition('/')
        if not bucket or any(c in bucket for c in ' *?'):
            raise ConfigError(
                f"{setting}: {entry!r} is not 'bucket' or 'bucket/prefix'.")
        return cls(bucket, prefix)

    def covers(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket:
            return False
        if not self.prefix:
            return True
        # 'bucket/features' is the folder features/, not features-old/.
        folder = self.prefix if self.prefix.endswith('/') else self.prefix + '/'
        return key.startswith(folder)

    def __str__(self) -> str:
        return f'{self.bucket}/{self.prefix}' if self.prefix else self.bucket


def _roots(setting: str) -> tuple[str, ...] | None:
    text = config.get(setting) or ''
    entries = [e.strip() for e in text.split(':') if e.strip()]
    if not entries:
        return None
    for entry in entries:
        if not os.path.isabs(entry):
            raise ConfigError(
                f"{setting}: {entry!r} is not an absolute path; list "
                f"directories as /absolute/paths separated by ':'.")
    return tuple(os.path.realpath(e) for e in entries)


def _grants(setting: str) -> tuple[S3Grant, ...] | None:
    text = config.get(setting) or ''
    entries = [e for e in text.split(',') if e.strip()]
    if not entries:
        return None
    return tuple(S3Grant.parse(e, setting) for e in entries)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Sandbox:
    """The allowlists a broker message runs under (None: setting unset)."""

    read_roots: tuple[str, ...] | None = None
    write_roots: tuple[str, ...] | None = None
    s3_read: tuple[S3Grant, ...] | None = None
    s3_write: tuple[S3Grant, ...] | None = None
    hosts: HostGuard = HostGuard()
    memory: bool = False

    @classmethod
    def from_settings(cls) -> Sandbox:
        """The operator's allowlists, read now."""
        return cls(
            read_roots=_roots('FILESYSTEM_READ_ROOTS'),
            write_roots=_roots('FILESYSTEM_WRITE_ROOTS'),
            s3_read=_grants('S3_READ_BUCKETS'),
            s3_write=_grants('S3_WRITE_BUCKETS'),
            hosts=HostGuard.parse(config.get('URL_ALLOWED_HOSTS') or ''),
            memory=bool(config.get('MEMORY_STORAGE_ALLOWED')))

    # --- checks ---------------------------------------------------------------

    def check(self, loc: Any, mode: str) -> str:
        """The key to use for ``loc`` (a filesystem key becomes its real
        path); LocationNotAllowedError when ``mode`` access is not allowed."""
        kind = _kind(loc)
        if kind == 'filesystem':
            return self._file(loc.key, mode)
        if kind == 's3':
            self._s3(loc.bucket_name, loc.key, mode)
            return loc.key
        if kind == 'memory':
            if not self.memory:
                raise LocationNotAllowedError(
                    f"memory location {loc.key!r}: messages from the broker "
                    f"may not use memory storage on this worker; set "
                    f"{ENV}MEMORY_STORAGE_ALLOWED=true to allow it.")
            return loc.key
        # url: the host is checked at every connection (netguard); writes
        # are refused by the backend itself (read-only).
        return loc.key

    def _file(self, key: str, mode: str) -> str:
        if mode == READ:
            roots = (self.read_roots or ()) + (self.write_roots or ())
            settings = (f'{ENV}FILESYSTEM_READ_ROOTS (or '
                        f'{ENV}FILESYSTEM_WRITE_ROOTS)')
        else:
            roots = self.write_roots or ()
            settings = f'{ENV}FILESYSTEM_WRITE_ROOTS'
        if not roots:
            raise LocationNotAllowedError(
                f"Cannot {mode} file {key!r}: this worker allows no "
                f"filesystem {mode}s from broker messages; set {settings} "
                f"to the directories it may {mode}.")
        if not isinstance(key, str) or not key or '\0' in key:
            raise LocationNotAllowedError(f"Cannot {mode} file {key!r}.")
        if mode == READ:
            real = os.path.realpath(key)
        else:
            # The file itself may not exist yet; its directory decides.
            directory, name = os.path.split(os.path.abspath(key))
            real = os.path.join(os.path.realpath(directory), name)
            if os.path.islink(real):
                raise LocationNotAllowedError(
                    f"Cannot write file {key!r}: it is a symbolic link.")
        if not any(_within(real, root) for root in roots):
            raise LocationNotAllowedError(
                f"Cannot {mode} file {key!r}: it is outside the directories "
                f"this worker may {mode} ({settings}).")
        return real

    def _s3(self, bucket: str, key: str, mode: str) -> None:
        if mode == READ:
            grants = (self.s3_read or ()) + (self.s3_write or ())
            settings = f'{ENV}S3_READ_BUCKETS (or {ENV}S3_WRITE_BUCKETS)'
        else:
            grants = self.s3_write or ()
            settings = f'{ENV}S3_WRITE_BUCKETS'
        where = f's3://{bucket}/{key}'
        if not grants:
            raise LocationNotAllowedError(
                f"Cannot {mode} {where}: this worker allows no S3 {mode}s "
                f"from broker messages; set {settings} to the buckets (or "
                f"bucket/prefix) it may {mode}.")
        segments = key.split('/') if isinstance(key, str) else ['']
        if not key or key.startswith('/') or any(
                s in ('.', '..') for s in segments):
            raise LocationNotAllowedError(
                f"Cannot {mode} {where}: keys with '.' or '..' segments or "
                f"a leading '/' are not accepted from broker messages.")
        if not any(g.covers(bucket, key) for g in grants):
            raise LocationNotAllowedError(
                f"Cannot {mode} {where}: not in the buckets this worker may "
                f"{mode} ({settings}).")

    def feature_cache_dir(self, value: Any) -> None:
        """A training's feature_cache_dir, when a path, is a place it
        writes: it must lie under a write root."""
        text = str(getattr(value, 'value', value))
        if text in ('auto', 'disabled'):
            return
        self._file(os.path.join(text, '.spacer-features'), WRITE)

    # --- I/O --------------------------------------------------------------------

    def load(self, loc: Any) -> Any:
        # bytes, or the BytesIO of a backend's load (load_bytes unwraps it).

        key = self.check(loc, READ)
        kind = _kind(loc)
        if kind == 'filesystem':
            data = read_file(key, f'file {loc.key!r}', strict=True)
            self._recheck_file(key, loc.key)
            return data
        if kind == 'url':
            return self._load_url(loc.key)
        return storage_for(loc).load(key)

    def store(self, loc: Any, data: bytes) -> None:
        storage_for(loc).store(self.check(loc, WRITE), data)

    def exists(self, loc: Any) -> bool:
        if _kind(loc) == 'url':
            try:
                return self._url_storage().exists(loc.key)
            except URLDownloadError as e:
                raise self._url_failure(loc.key, e) from None
        return storage_for(loc).exists(self.check(loc, READ))

    def delete(self, loc: Any) -> None:
        storage_for(loc).delete(self.check(loc, WRITE))

    def _recheck_file(self, real: str, key: str) -> None:
        # The path was resolved before opening; a directory swapped for a
        # link in between would show now. Cheap, and closes that window
        # for everything but the read itself.
        if os.path.realpath(real) != real:
            raise LocationNotAllowedError(
                f"Cannot read file {key!r}: its path changed while reading.")

    def _url_storage(self) -> Any:
        return URLStorage(guard=self.hosts)

    def _load_url(self, url: str) -> Any:
        try:
            return self._url_storage().load(url)
        except DataLimitError:
            raise           # too large: says nothing about the network
        except URLDownloadError as e:
            if _server_busy(e):
                raise       # an allowed server answered 5xx/429: retried
            raise self._url_failure(url, e) from None

    def _url_failure(self, url: str, error: Exception) -> URLDownloadError:
        logger.warning('URL %r from a broker message failed: %s: %s', url,
                       type(error).__name__, error)
        return URLDownloadError(
            f"Could not download {url!r}: the host is not allowed, cannot "
            f"be reached, or has no such file. The worker's log says which "
            f"(allowed private hosts: {ENV}URL_ALLOWED_HOSTS).")


def _server_busy(error: Exception) -> bool:
    """An allowed host's HTTP server answered 5xx or 429 (transient, worth
    a retry). Refused, unreachable, timed-out connections and 4xx answers
    all read alike instead: those are what a port scan tells apart."""

    return isinstance(error, TransientError) and isinstance(
        error.__context__, urllib.error.HTTPError)


def _kind(loc: Any) -> str:
    value = getattr(loc, 'storage_type', None)
    return str(getattr(value, 'value', value))


# --- the switch -------------------------------------------------------------------

def current() -> Sandbox | None:
    """The sandbox of the running task, or None (trusted caller)."""
    return _current.get()


@contextmanager
def untrusted(sandbox: Sandbox | None = None) -> Iterator[Sandbox]:
    """Run the block as a broker message: storage goes through ``sandbox``
    (by default the operator's settings, read now)."""
    active = sandbox if sandbox is not None else Sandbox.from_settings()
    token = _current.set(active)
    try:
        yield active
    finally:
        _current.reset(token)


def hide_causes(error: E, broker: bool = False) -> E:
    """``error`` without the exceptions it was raised from, when a broker
    message runs (``broker``, or inside :func:`untrusted`); unchanged for a
    trusted caller.

    The failure text Celery stores holds the whole chain, and a decoder's
    own message (pickle's "invalid load key", numpy's header, UTF-8) may
    quote bytes of the file it choked on; our messages never do. The chain
    goes to the worker's log instead.
    """
    if (not broker and current() is None) or (error.__cause__ is None
                             and error.__context__ is None):
        return error
    logger.info('%s: %s', type(error).__name__, error, exc_info=error)
    error.__cause__ = None
    error.__suppress_context__ = True
    return error


def in_context(func: Callable[..., T]) -> Callable[..., T]:
    """``func`` bound to a copy of the caller's context (sandbox
    included), for running in another thread."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return context.run(func, *args, **kwargs)
    return run
