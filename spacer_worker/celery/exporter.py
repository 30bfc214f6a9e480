"""``spacer-worker metrics``: the one exporter of queue lengths and of the
broker Redis's memory.

Queue lengths are the same number for every worker, so they are read by one
process per deployment (not by each worker) at each scrape: one Redis
pipeline over every queue the configuration routes to
(:func:`queues.known_queues`), ten priority lists each.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from spacer_worker.celery.queues import BrokerView, broker_redis, read_broker
from spacer_worker.celery.redis_memory import RedisMemory, read_memory
from spacer_worker.metrics import METRICS

logger = logging.getLogger(__name__)

_SEEN_LIMIT = 10000


class QueueCollector:
    """prometheus_client collector reading the broker at each scrape."""

    def __init__(self, app: Any, queues: Sequence[str]) -> None:
        self.app = app
        self.queues = list(queues)
        self.errors = 0
        # Messages from senders that do not stamp spacer_sent_at are aged
        # from when this exporter first saw them at a queue's tail.
        self._first_seen: OrderedDict[str, float] = OrderedDict()

    def _age(self, task_id: str | None, sent_at: float | None,
             now: float) -> float | None:
        if sent_at is not None:
            return max(0.0, now - sent_at)
        if task_id is None:
            return None
        seen = self._first_seen.setdefault(task_id, now)
        while len(self._first_seen) > _SEEN_LIMIT:
            self._first_seen.popitem(last=False)
        return now - seen

    def read(self) -> tuple[BrokerView, RedisMemory]:
        conn, redis = broker_redis(self.app)
        try:
            return read_broker(redis, self.queues), read_memory(redis)
        finally:
            conn.release()

    def collect(self) -> Iterable[Any]:
        # Lazy: prometheus_client must load after recording set PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        def family(name: str, kind: type) -> Any:
            spec = METRICS[name]
            return kind(name, spec.help, labels=spec.labels)

        errors = family('spacer_queue_exporter_errors_total',
                        CounterMetricFamily)
        try:
            view, memory = self.read()
        except Exception as e:
            self.errors += 1
            logger.warning('Could not read the queues from the broker: '
                           '%s: %s', type(e).__name__, e)
            errors.add_metric([], self.errors)
            return [errors]
        errors.add_metric([], self.errors)
        now = time.time()
        lengths = family('spacer_queue_length', GaugeMetricFamily)
        ages = family('spacer_queue_oldest_age_seconds', GaugeMetricFamily)
        for depth in view.queues:
            for priority, count in depth.by_priority.items():
                lengths.add_metric([depth.queue, str(priority)], count)
            age = self._age(depth.oldest_id, depth.oldest_sent_at, now) \
                if depth.waiting else 0.0
            ages.add_metric([depth.queue], age or 0.0)
        unacked = family('spacer_unacked_messages', GaugeMetricFamily)
        unacked.add_metric([], view.unacked)
        alive = family('spacer_workers_alive', GaugeMetricFamily)
        alive.add_metric([], view.workers_alive)
        redis = []
        for name, kind, value in (
                ('spacer_redis_memory_used_bytes', GaugeMetricFamily,
                 memory.used_bytes),
                ('spacer_redis_memory_max_bytes', GaugeMetricFamily,
                 memory.max_bytes),
                ('spacer_redis_evicted_keys_total', CounterMetricFamily,
                 memory.evicted_keys),
                ('spacer_redis_oom_rejected_total', CounterMetricFamily,
                 memory.oom_rejected)):
            metric = family(name, kind)
            metric.add_metric([], value)
            redis.append(metric)
        return [lengths, ages, unacked, alive, *redis, errors]


def serve(app: Any, queues: Sequence[str], bind: str, port: int,
          credentials: str = '') -> Any:
    """Serve the queue metrics until interrupted; returns the server
    (started in this thread by the caller's ``serve_forever``)."""
    # Lazy: prometheus_client must load after recording set PROMETHEUS_MULTIPROC_DIR.
    from prometheus_client import CollectorRegistry

    from spacer_worker.metrics.host import make_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(app, queues))
    return make_server(registry, bind, port, credentials)
