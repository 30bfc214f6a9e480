"""Celery remote control, closed to all but the commands an operator allowed.

Celery's remote control listens on a broadcast exchange of the broker:
anyone who can write to Redis can send ``time_limit`` (raise any task's
ceiling), ``shutdown`` and ``pool_restart`` (stop or restart every worker),
``rate_limit``, ``add_consumer`` (consume any queue), ``autoscale``,
``memdump``/``objgraph`` (expensive dumps) and more, to every worker.
Celery has no allowlist, only all or nothing
(``worker_enable_remote_control``).

This module replaces the handlers of a worker's control node: a command
named in WORKER_CONTROL_COMMANDS (read at worker start) runs as before;
every other one is refused, logged, and answered with an error reply. The
default is what Flower's read-only views call (``stats``,
``active_queues``, ``registered``, ``scheduled``, ``active``,
``reserved``, ``revoked``, ``conf``; ``enable_events`` on a timer), what
our health check and ``celery inspect`` read (``ping``, ``query_task``,
``report``, ``clock``), worker start-up sync (``hello``) and the
documented ``revoke``. Celery's old aliases (``dump_active`` ...) follow
their command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import ConfigError

logger = logging.getLogger(__name__)


def allowed_commands() -> frozenset[str]:
    """The command names WORKER_CONTROL_COMMANDS allows, checked against
    the ones Celery knows (a typo fails the worker's start, loudly)."""
    from celery.worker.control import Panel

    names = {n.strip() for n in
             str(config.get('WORKER_CONTROL_COMMANDS') or '').split(',')}
    names.discard('')
    unknown = sorted(names - set(Panel.data))
    if unknown:
        raise ConfigError(
            f"WORKER_CONTROL_COMMANDS names {', '.join(unknown)}, which "
            f"Celery's remote control does not know; known: "
            f"{', '.join(sorted(Panel.data))}.")
    for name, meta in Panel.meta.items():
        if meta.alias and name in names:
            names.add(meta.alias)
    return frozenset(names)


def restricted_handlers(allowed: frozenset[str]) -> dict[str, Callable]:
    """Celery's control handlers, each refused unless in ``allowed``."""
    from celery.worker.control import Panel

    return {name: handler if name in allowed else _refusal(name)
            for name, handler in Panel.data.items()}


def _refusal(name: str) -> Callable[..., dict[str, str]]:
    def refuse(state: Any, **arguments: Any) -> dict[str, str]:
        logger.warning(
            'Refused remote control command %r (arguments %r): it is not '
            'in WORKER_CONTROL_COMMANDS.', name, sorted(arguments))
        return {'error': f'remote control command {name!r} is refused by '
                         f'this worker (not in WORKER_CONTROL_COMMANDS)'}
    return refuse


def close(consumer: Any) -> None:
    """Restrict the control node of a Celery consumer, if it has one
    (``worker_enable_remote_control`` off: nothing to restrict)."""
    allowed = allowed_commands()
    for step in consumer.blueprint.steps.values():
        node = getattr(getattr(step, 'box', None), 'node', None)
        if node is not None:
            node.handlers = restricted_handlers(allowed)
            logger.info('Remote control: only %s are accepted.',
                        ', '.join(sorted(allowed)) or 'no commands')
