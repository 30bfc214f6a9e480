"""Bytes at a ``DataLocation``: the base every format helper builds on.

Inside :func:`spacer_worker.storage.sandbox.untrusted` (a task from the
broker) every call here goes through the operator's allowlists.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from spacer_worker.storage.factory import storage_for
from spacer_worker.storage.sandbox import READ, WRITE, current, untrusted


def load_bytes(loc: Any) -> bytes:
    """The whole object at ``loc``.

    Every trusted read goes through the backend's ``load`` (so a test
    patching ``URLStorage.load``, as CoralNet's do, is obeyed); a
    PySpacer-style ``load`` returning a BytesIO is accepted too.
    """
    sandbox = current()
    if sandbox is not None:
        data = sandbox.load(loc)
    else:
        data = storage_for(loc).load(loc.key)
    if not isinstance(data, bytes) and hasattr(data, 'getvalue'):
        data = data.getvalue()
    return data


# Set for the run of a task on a leased worker (spacer_worker.worker.
# delivery): it checks the run still holds its message, and takes the write
# (returns True) when ``loc`` is an output, staged until the run commits.
write_guard: ContextVar[Callable[[Any, bytes], bool] | None] = ContextVar(
    'spacer_write_guard', default=None)


# Set with write_guard: takes a clean-up to run once the run's staged
# outputs are committed (returns True).
commit_hook: ContextVar[Callable[[Callable[[], None]], bool] | None] = \
    ContextVar('spacer_commit_hook', default=None)


def when_committed(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` once this run's outputs are in place: now when they
    were written directly, after the worker's commit when they are staged
    (a run that never commits never runs it). What a redelivered run
    would need until then (a training's checkpoint) is removed this way."""
    hook = commit_hook.get()
    if hook is None or not hook(_under(current(), cleanup)):
        cleanup()


def _under(sandbox: Any, cleanup: Callable[[], None]) -> Callable[[], None]:
    """``cleanup`` checked by the sandbox it was asked under: the commit
    runs it after the task body, outside that sandbox, and what it
    removes came from the message."""
    if sandbox is None:
        return cleanup

    def run() -> None:
        with untrusted(sandbox):
            cleanup()
    return run


def store_bytes(loc: Any, data: bytes) -> None:
    """Write ``data`` at ``loc`` whole (atomic on every backend)."""
    sandbox = current()
    if sandbox is not None:
        # Refused before it is staged, not only when it is committed.
        sandbox.check(loc, WRITE)
    guard = write_guard.get()
    if guard is not None and guard(loc, data):
        return
    if sandbox is not None:
        sandbox.store(loc, data)
        return
    storage_for(loc).store(loc.key, data)


def delete(loc: Any) -> None:
    """Remove the object at ``loc``; a missing object is not an error."""
    sandbox = current()
    if sandbox is not None:
        sandbox.delete(loc)
        return
    storage_for(loc).delete(loc.key)


def exists(loc: Any) -> bool:
    sandbox = current()
    if sandbox is not None:
        return sandbox.exists(loc)
    return storage_for(loc).exists(loc.key)


def check_readable(loc: Any) -> None:
    """Raise unless the running task may read ``loc`` (for callers that
    look at a location, e.g. its file's identity, before reading it)."""
    sandbox = current()
    if sandbox is not None:
        sandbox.check(loc, READ)


def describe(loc: Any) -> str:
    """How messages name ``loc`` (``s3://bucket/key``, ``file 'x'``...)."""
    return storage_for(loc).describe(loc.key)
