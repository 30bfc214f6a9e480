"""Worker process hooks: load the extractor network once per pool process.

GPU workers: run one worker per GPU, each seeing only its GPU, with the
prefork pool and one process::

    CUDA_VISIBLE_DEVICES=1 celery -A spacer_worker worker -Q extract -c 1 \\
        -n extract-gpu1@%h

CUDA must never be initialised in the worker's parent process: the pool
forks its children from the parent, and a child forked after CUDA init
cannot use CUDA. So the network is built in the child, at its start
(``worker_process_init``), when ``PRELOAD_EXTRACTOR`` names an extractor;
otherwise on the first task, and reused afterwards (keyed by the weights'
hash, see ``extractors.runtime``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_shutdown,
)

from spacer_worker import config
from spacer_worker.config.pool import set_tasks_at_once
from spacer_worker.exceptions import ConfigError
from spacer_worker.extractors import FeatureExtractor

logger = logging.getLogger(__name__)


def preload_spec() -> dict | None:
    """The PRELOAD_EXTRACTOR setting as an extractor serialization."""
    value = (config.get('PRELOAD_EXTRACTOR') or '').strip()
    if not value:
        return None
    source = 'PRELOAD_EXTRACTOR'
    if not value.startswith('{'):
        source = value
        try:
            value = Path(value).read_text()
        except OSError as e:
            raise ConfigError(
                f'PRELOAD_EXTRACTOR: cannot read {source}: {e}. Give an '
                f'extractor serialization as JSON or a path to one.') from e
    try:
        spec = json.loads(value)
    except ValueError as e:
        raise ConfigError(f'PRELOAD_EXTRACTOR ({source}) is not valid JSON: '
                          f'{e}') from e
    if not isinstance(spec, dict):
        raise ConfigError(f'PRELOAD_EXTRACTOR ({source}) must be a JSON '
                          f'object (an extractor serialization).')
    return spec


def preload_extractor() -> bool:
    """Build the configured extractor's network in this process."""
    spec = preload_spec()
    if spec is None:
        return False
    from spacer_worker.extractors.runtime import shared

    extractor = FeatureExtractor.deserialize(spec)
    if shared.server_configured():
        # The worker's shared server builds it, once for every pool process.
        shared.remote_network(extractor)
        return True
    # The network (and torch, on a GPU host) loads here, in the pool child,
    # never in the worker's parent: a child forked after CUDA init cannot
    # use CUDA.
    from spacer_worker.extractors.runtime.engine import preload

    preload(extractor)
    return True


@worker_process_init.connect
def _preload_in_child(**_: Any) -> None:
    # Runs in each pool child (and in the solo pool's only process). A
    # failure is logged, not raised: a child that dies at start is forked
    # again and again; tasks will report the error on first use instead.
    try:
        if preload_extractor():
            logger.info('Extractor network preloaded in pool process.')
    except Exception:
        logger.exception('Could not preload the extractor (setting '
                         'PRELOAD_EXTRACTOR); tasks will load it on first use.')


@worker_init.connect
def _telemetry_off(**_: Any) -> None:
    # Before any pool process or network server starts: they inherit it.
    from spacer_worker.config import telemetry
    telemetry.turn_off()


@worker_init.connect
def _check_parent_has_no_cuda(**_: Any) -> None:
    # The parent must stay CUDA-free (see module docstring).
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_initialized():
        logger.error('CUDA was initialised in the worker parent process; '
                     'forked pool processes cannot use the GPU. Do not '
                     'import models at module level.')


_network_server: Any = None


@worker_init.connect
def _start_network_server(**_: Any) -> None:
    # Before the pool forks, so every pool process inherits the address
    # (extractors.runtime.shared). Never imports torch here: the server is
    # a process of its own.
    global _network_server
    from spacer_worker.extractors.runtime import shared

    if not shared.enabled() or _network_server is not None:
        return
    _network_server = shared.ServerProcess().start()
    shared.use_server(_network_server.address)


@worker_shutdown.connect
def _stop_network_server(**_: Any) -> None:
    global _network_server
    if _network_server is None:
        return
    from spacer_worker.extractors.runtime import shared

    _network_server.stop()
    shared.use_server(None)
    _network_server = None


@worker_init.connect
def _record_pool_size(sender: Any = None, **_: Any) -> None:
    # Before the pool forks: children inherit it. BLAS threads per task
    # are the CPUs divided by the tasks run at once (training.threads).
    set_tasks_at_once(getattr(sender, 'concurrency', None) or 1)


@worker_init.connect
def _configure_logging(**_: Any) -> None:
    # LOG_DESTINATION / LOG_LEVEL / LOG_FORMAT, before the pool forks, so
    # every child logs the same way (spacer_worker.config.logs).
    from spacer_worker.config.logs import configure_logging
    configure_logging()


@task_prerun.connect
def _task_log_context(task_id: str | None = None, task: Any = None,
                      args: Any = None, **_: Any) -> None:
    from spacer_worker.config.logs import start_task

    request = getattr(task, 'request', None)
    delivery = getattr(request, 'delivery_info', None) or {}
    start_task(task_id, getattr(task, 'name', None),
               delivery.get('routing_key'),
               getattr(request, 'hostname', None),
               args[0] if args else None)


@task_postrun.connect
def _task_log_done(state: str | None = None, **_: Any) -> None:
    from spacer_worker.config.logs import finish_task
    finish_task(state)
