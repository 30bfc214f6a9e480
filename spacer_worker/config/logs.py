"""Logging as PySpacer sets it up, plus task context and a JSON option.

Settings: ``LOG_DESTINATION`` ('console', a file path, or unset: leave
logging alone, as PySpacer does), ``LOG_LEVEL`` (INFO...), ``LOG_FORMAT``
('text', PySpacer's layout, or 'json': one object per line). Nothing is
configured at import: the worker calls :func:`configure_logging` when it
starts, the CLI and ``mailman`` when they run.

In a worker every record logged while a task runs carries the task's id,
name, queue, job token and the worker's name; the line logged when a task
ends carries its duration too. JSON lines hold all of them::

    {"time": "2026-12-01T18:00:00.123Z", "level": "INFO",
     "logger": "spacer_worker.config.logs", "message": "task finished: SUCCESS",
     "task_id": "...", "task_name": "spacer.extract_features",
     "job_token": "img1", "queue": "extract", "worker": "extract@host",
     "duration": 1.234}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from spacer_worker.config import settings
from spacer_worker.exceptions import ConfigError

__all__ = ['CONTEXT_FIELDS', 'JsonFormatter', 'TaskContextFilter',
           'configure_logging', 'job_token_of', 'task_context']

logger = logging.getLogger(__name__)

#: PySpacer's text layout.
TEXT_FORMAT = '%(asctime)s - %(levelname)s:%(name)s\n%(message)s'
CONTEXT_FIELDS = ('task_id', 'task_name', 'job_token', 'queue', 'worker',
                  'duration')
FORMATS = ('text', 'json')

task_context: ContextVar[dict[str, Any] | None] = ContextVar(
    'spacer_task_context', default=None)

_HANDLER_MARK = '_spacer_worker_handler'


class TaskContextFilter(logging.Filter):
    """Puts the running task's fields on every record (None outside one;
    a field already on the record, e.g. ``duration``, is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = task_context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            'time': datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec='milliseconds').replace('+00:00', 'Z'),
            'level': record.levelname,
            'logger': record.name,
            'message': record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        if record.exc_info:
            entry['exception'] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _level(value: Any) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value).strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f'LOG_LEVEL {value!r} is not a log level; use '
                          f'DEBUG, INFO, WARNING, ERROR or CRITICAL.')
    return level


def configure_logging(destination: str | None = None,
                      level: str | int | None = None,
                      fmt: str | None = None,
                      default_destination: str | None = None
                      ) -> logging.Handler | None:
    """Attach one handler to the root logger from the LOG_* settings (the
    arguments override them). Returns it, or None when no destination is
    set (logging is then left as the application set it). Calling again
    replaces the handler instead of adding a second one."""
    destination = destination or settings.get('LOG_DESTINATION') or \
        default_destination
    fmt = (fmt or settings.get('LOG_FORMAT') or 'text').strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"LOG_FORMAT {fmt!r}: expected 'text' or 'json'.")
    if not destination and fmt == 'json':
        destination = 'console'  # asking for JSON means wanting the lines
    if not destination:
        return None
    level = _level(level if level is not None else settings.get('LOG_LEVEL'))
    if destination == 'console':
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(destination)
        except OSError as e:
            raise ConfigError(f'LOG_DESTINATION {destination!r} cannot be '
                              f'opened for writing: {e}.') from e
    handler.setFormatter(JsonFormatter() if fmt == 'json'
                         else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TaskContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # Our package and PySpacer-named loggers log at this level too.
    logging.getLogger('spacer_worker').setLevel(level)
    return handler


def job_token_of(payload: Any) -> str | None:
    """The job token(s) a task payload carries (a JobMsg: its tasks')."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get('job_token'), str):
        return payload['job_token']
    tokens = [t.get('job_token') for t in payload.get('tasks') or []
              if isinstance(t, dict) and isinstance(t.get('job_token'), str)]
    return ','.join(tokens) if tokens else None


def start_task(task_id: str | None, task_name: str | None,
               queue: str | None, worker: str | None, payload: Any) -> None:
    task_context.set({'task_id': task_id, 'task_name': task_name,
                      'queue': queue, 'worker': worker,
                      'job_token': job_token_of(payload),
                      'started': time.monotonic()})
    logger.info('task started')


def finish_task(state: str | None) -> None:
    context = task_context.get()
    if context is None:
        return
    duration = round(time.monotonic() - context['started'], 3)
    logger.info('task finished: %s in %.3f s', state, duration,
                extra={'duration': duration})
    task_context.set(None)
