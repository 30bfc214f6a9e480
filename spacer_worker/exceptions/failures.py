"""A failure as CoralNet reads it: text whose last line is
``<PySpacer class path>: <message>``.

CoralNet takes the last line of ``JobReturnMsg.error_message``, splits it at
the first colon and compares the class path with a few strings: the user
errors below are shown to the user, ``RowColumnMismatchError`` makes a
training reset its stale features, anything else is mailed to the admins.
So the class on that line must be the one PySpacer would have raised, never
one of ours (:attr:`SpacerError.wire_class` is the table), while our own
class and traceback stay above it, as the cause.

Failures that happen around a task rather than in it (the job was lost,
revoked, ran out of time, its worker died) end in the class paths of
:data:`INFRASTRUCTURE`, which CoralNet files as admin errors.

One rule for every text made here: a line ends only where we end it. Any
character some reader breaks a line at (:data:`LINE_BREAKS`: ``str.
splitlines`` honours ten of them, not only ``\\n``) is folded to a space in
every message of the text, and the other ones also in the frames around
them, so a location or file name in a message can never end a line and put
a class of its choosing on the last line.

Client-side module: no torch, numpy or scikit-learn.
"""

from __future__ import annotations

import builtins
import traceback
from functools import cache
from typing import TypeVar

from spacer_worker.exceptions import SpacerError

#: What CoralNet treats as the user's fault (no admin e-mail).
USER_ERROR_CLASSES = (
    'spacer.exceptions.URLDownloadError',
    'spacer.exceptions.DataLimitError',
    'spacer.exceptions.RowColumnInvalidError',
    'PIL.UnidentifiedImageError',
)
#: CoralNet resets a source's features and trains again on this one.
STALE_FEATURES_CLASS = 'spacer.exceptions.RowColumnMismatchError'

#: The last line's class for failures around a task, by what happened.
LOST = 'spacer_worker.exceptions.ResultLostError'
REVOKED = 'celery.exceptions.TaskRevokedError'
SOFT_TIME_LIMIT = 'billiard.exceptions.SoftTimeLimitExceeded'
HARD_TIME_LIMIT = 'billiard.exceptions.TimeLimitExceeded'
WORKER_LOST = 'billiard.exceptions.WorkerLostError'
#: A record the web process read back from Redis was malformed or forged.
BAD_RECORD = 'spacer_worker.exceptions.RecordError'
INFRASTRUCTURE = {
    'lost': LOST,
    'revoked': REVOKED,
    'soft_time_limit': SOFT_TIME_LIMIT,
    'hard_time_limit': HARD_TIME_LIMIT,
    'worker_lost': WORKER_LOST,
    'bad_record': BAD_RECORD,
}

_BUILTIN = 'builtins'
E = TypeVar('E', bound=BaseException)

#: Every character some reader (``str.splitlines``, Unicode line breaking,
#: a terminal) ends a line at.
LINE_BREAKS = '\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'
_BUT_NEWLINE = str.maketrans({c: ' ' for c in LINE_BREAKS if c != '\n'})


def has_break(text: str) -> bool:
    """Whether ``text`` holds any character a reader may end a line at."""
    return any(c in text for c in LINE_BREAKS)


def one_line(text: object) -> str:
    """``text`` on one line: every run of whitespace (line breaks of every
    kind included) becomes one space."""
    return ' '.join(str(text).split())


def fold_breaks(text: str) -> str:
    """``text`` whose only line break is ``\\n``: every other one becomes a
    space (for texts whose lines are ours, as a traceback's frames)."""
    return text.translate(_BUT_NEWLINE)


def printed_class(cls: type) -> str:
    """The class path Python's traceback prints for ``cls``."""
    module = cls.__module__
    name = cls.__qualname__
    return name if module in (_BUILTIN, '__main__') else f'{module}.{name}'


def time_limit_behind(exc: BaseException) -> BaseException | None:
    """The soft time limit that ``exc`` is, or was raised while handling.

    Celery's soft time limit is an exception raised wherever its signal
    lands; a handler that turns any failure into its own error (a pickle
    that cannot be read, weights PyTorch cannot load) would otherwise
    report the worker stopping the task as bad input. The chain is
    followed through ``from None`` too: the limit is still what happened.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if printed_class(type(current)) == SOFT_TIME_LIMIT:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def wire_class_of(exc: BaseException) -> str:
    """PySpacer's class path for ``exc``: our errors by their table entry,
    anyone else's (numpy, Pillow, builtins) as they are."""
    if isinstance(exc, SpacerError):
        return type(exc).wire_class
    return printed_class(type(exc))


@cache
def wire_type(path: str) -> type[BaseException]:
    """An exception class that prints as ``path``.

    Builtins and classes importable here (Pillow on a worker) are the real
    ones; PySpacer's are stand-ins that only carry the name, since PySpacer
    is not installed beside us.
    """
    module, _, name = path.rpartition('.')
    module = module or _BUILTIN
    if module == _BUILTIN:
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls
    elif not module.startswith('spacer.'):
        try:
            imported = __import__(module, fromlist=[name])
            cls = getattr(imported, name)
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, BaseException) and \
                printed_class(cls) == path:
            return cls
    return stand_in(path)


@cache
def stand_in(path: str) -> type[WireError]:
    """The one class (per path) that carries a class path we cannot
    import: the same class each time, so pickling finds it again."""
    module, _, name = path.rpartition('.')
    return type(name, (WireError,), {'__module__': module or _BUILTIN,
                                     '__qualname__': name})


def rebuild_wire_error(path: str, message: str) -> BaseException:
    """Unpickle a stand-in: its class again from :func:`stand_in`."""
    return stand_in(path)(message)


class WireError(Exception):
    """Base of the stand-ins :func:`wire_type` makes (one message arg)."""

    def __reduce__(self) -> tuple:
        # A stand-in's class cannot be found by its path (PySpacer is not
        # installed), so pickle names the path instead: without this, a
        # prefork child's failure reaches Celery as a bare WireError.
        message = self.args[0] if self.args else ''
        return rebuild_wire_error, (printed_class(type(self)), message)


def as_pyspacer_raises(exc: BaseException) -> BaseException:
    """``exc`` as PySpacer's in-process API raises it: under the builtin or
    importable class its wire name is (FileNotFoundError, ValueError,
    PIL's), with our message and ``exc`` as its cause; else ``exc``
    itself (our class already carries PySpacer's class name)."""
    cls = wire_type(wire_class_of(exc))
    if issubclass(cls, WireError) or type(exc) is cls:
        return exc
    try:
        converted = cls(str(exc))
    except Exception:  # a class with another constructor
        return exc
    converted.__cause__ = exc
    return converted


def to_wire(exc: BaseException) -> BaseException:
    """``exc`` under its PySpacer class, with ``exc`` as its cause; ``exc``
    itself when it already prints as that class."""
    path = wire_class_of(exc)
    message = _message_of(exc)
    broken = has_break(message)
    if broken:  # the class must stay on the last line
        message = one_line(message)
    if printed_class(type(exc)) == path and not broken:
        return exc
    try:
        wire = wire_type(path)(message)
    except Exception:  # a class with another constructor: a stand-in
        wire = stand_in(path)(message)
    wire.__cause__ = exc
    return wire


def failure_text(exc: BaseException) -> str:
    """The traceback of ``exc`` (and its causes), ending in the line
    ``<PySpacer class path>: <message>``: PySpacer's error_message."""
    wire = to_wire(exc)
    formatted = traceback.TracebackException(
        type(wire), wire, wire.__traceback__)
    _fold_messages(formatted)
    text = fold_breaks(''.join(formatted.format()))
    # Whatever the chain held (a note after the message, a message that
    # still broke a line), the last line is ours.
    return ensure_last_line(text, wire_class_of(exc), str(wire))


def fold_chain(exc: E) -> E:
    """``exc``, with the message of every exception in its chain put on
    one line in place (their ``args``), for texts formatted elsewhere (the
    traceback Celery stores with a FAILURE). A class whose ``__str__``
    does not come from its args keeps its text: :func:`ensure_last_line`
    still guards the last line of what a client composes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = _message_of(current)
        if has_break(message):
            try:
                current.args = (one_line(message),)
            except (AttributeError, TypeError):
                pass
        current = current.__cause__ or current.__context__
    return exc


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails
        return f'<{type(exc).__name__} without a printable message>'


def _fold_messages(formatted: traceback.TracebackException) -> None:
    """Fold the message (and notes) of every exception of a formatted
    chain onto one line: the causes' messages are as untrusted as the
    last one's."""
    seen: set[int] = set()
    pending = [formatted]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        text = getattr(current, '_str', None)
        if isinstance(text, str) and has_break(text):
            current._str = one_line(text)
        notes = getattr(current, '__notes__', None)
        if isinstance(notes, list):
            current.__notes__ = [one_line(n) for n in notes]
        for link in (current.__cause__, current.__context__,
                     *(getattr(current, 'exceptions', None) or ())):
            if link is not None:
                pending.append(link)


def last_line(text: str | None) -> str:
    lines = (text or '').strip().splitlines()
    return lines[-1] if lines else ''


def error_class(text: str | None) -> str:
    """The class path CoralNet reads from a failure text (its last line,
    up to the first colon)."""
    return last_line(text).split(':', 1)[0].strip()


def is_user_error(text: str | None) -> bool:
    return error_class(text) in USER_ERROR_CLASSES


def line(path: str, message: str) -> str:
    """One classifiable line: ``path: message`` (no line break of any
    kind in either)."""
    return f"{one_line(path)}: {one_line(message)}"


def ensure_last_line(text: str | None, path: str, message: str) -> str:
    """``text`` ending in ``path: message`` (appended unless already so),
    with no line break but ``\\n`` anywhere (:data:`LINE_BREAKS`)."""
    final = line(path, message)
    body = fold_breaks(text or '').rstrip()
    if error_class(body) == one_line(path):
        return body
    return f'{body}\n{final}' if body else final
