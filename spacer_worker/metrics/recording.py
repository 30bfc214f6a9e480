"""Recording worker metrics, in prometheus_client's multiprocess mode.

Off (every function here returns at once, prometheus_client is never
imported) unless :func:`enable` ran in the worker's parent process, which
:mod:`spacer_worker.worker.metrics` does when ``METRICS_PORT`` is set.
Pool children inherit the switch and the directory through fork; each
process writes its own memory-mapped files there.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from spacer_worker.metrics import WORKER_METRICS

# Task durations: classify tasks take well under a second, trainings hours.
# Up to the longest time limit (TRAIN_HIGH_TIME_LIMIT: 7 days), so a long
# HIGH training lands in a bucket of its own, not only in +Inf.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                    600, 1800, 3600, 7200, 14400, 28800, 86400, 172800,
                    345600, 604800)

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_directory: str | None = None


def enabled() -> bool:
    return _directory is not None


def enable(directory: str) -> None:
    """Record into ``directory`` from now on, in this process and in every
    process forked from it. Call before any metric is touched."""
    global _directory
    os.makedirs(directory, exist_ok=True)
    os.environ['PROMETHEUS_MULTIPROC_DIR'] = directory
    # Lazy: prometheus_client must load after PROMETHEUS_MULTIPROC_DIR is set.
    from prometheus_client import values
    # In case prometheus_client was imported before the variable was set.
    values.ValueClass = values.MultiProcessValue()
    with _lock:
        _metrics.clear()
        _directory = directory


def disable() -> None:
    global _directory
    with _lock:
        _metrics.clear()
        _directory = None


def metric(name: str) -> Any:
    """The prometheus_client object of one of ``WORKER_METRICS``."""
    found = _metrics.get(name)
    if found is not None:
        return found
    # Lazy: prometheus_client must load after PROMETHEUS_MULTIPROC_DIR is set.
    import prometheus_client as prom

    with _lock:
        if name in _metrics:
            return _metrics[name]
        spec = next(m for m in WORKER_METRICS if m.name == name)
        # Not registered anywhere: the host endpoint reads the files.
        common = {'labelnames': spec.labels, 'registry': None}
        if spec.kind == 'histogram':
            made = prom.Histogram(spec.name, spec.help,
                                  buckets=DURATION_BUCKETS, **common)
        elif spec.kind == 'gauge':
            # Summed over live processes: a dead process's tasks are not
            # running any more (the endpoint drops dead processes' files).
            made = prom.Gauge(spec.name, spec.help,
                              multiprocess_mode='livesum', **common)
        else:
            made = prom.Counter(spec.name.removesuffix('_total'), spec.help,
                                **common)
        _metrics[name] = made
        return made


# --- what the rest of the worker calls -------------------------------------

def cache_lookup(cache: str, hit: bool) -> None:
    """A classifier or network cache was asked (``cache``: 'classifier',
    'network')."""
    if enabled():
        metric('spacer_cache_requests_total').labels(
            cache, 'hit' if hit else 'miss').inc()


def epoch_done() -> None:
    if enabled():
        metric('spacer_training_epochs_total').inc()


def leases_restored(count: int) -> None:
    if enabled() and count:
        metric('spacer_lease_restored_total').inc(count)
