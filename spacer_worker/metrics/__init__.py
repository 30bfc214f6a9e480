"""Prometheus metrics of the workers and the queues.

Two endpoints, both off unless asked for, both bound to 127.0.0.1 unless
``METRICS_BIND`` says otherwise, both with optional basic auth
(``METRICS_AUTH``):

* **per worker host** (``METRICS_PORT``): every worker on the host records
  into one multiprocess directory (prometheus_client's multiprocess mode:
  prefork pool children write memory-mapped files); the first worker that
  binds the port serves the merged numbers of all of them, and another
  takes over within ``SERVE_RETRY`` seconds if it stops
  (:mod:`spacer_worker.metrics.host`; the Celery signal handlers that
  record are :mod:`spacer_worker.worker.metrics`).
* **queues** (``spacer-worker metrics``): one exporter per deployment reads
  queue lengths per queue and priority, the oldest waiting job's age, the
  live workers (leases) and Redis's memory from Redis at each scrape
  (:mod:`spacer_worker.celery.queues`).

``METRICS`` below is the one list of metric names; the Grafana dashboard and
the alert rules in docs/ and config/ use only these (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ['METRICS', 'Metric', 'QUEUE_METRICS', 'WORKER_METRICS']


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str               # counter, gauge, histogram
    help: str
    labels: tuple[str, ...] = ()


WORKER_METRICS: tuple[Metric, ...] = (
    Metric('spacer_task_duration_seconds', 'histogram',
           'Wall time of a task on a worker, from start to end.',
           ('task', 'queue')),
    Metric('spacer_tasks_total', 'counter',
           "Tasks ended, by outcome (success, failure, retry, revoked) and "
           "error class ('' when none).", ('task', 'queue', 'outcome', 'error')),
    Metric('spacer_tasks_in_flight', 'gauge',
           'Tasks running now.', ('task', 'queue')),
    Metric('spacer_extract_images_total', 'counter',
           'Images whose features were extracted (extract_features, '
           'classify_image, and their jobs).', ('task',)),
    Metric('spacer_extract_patches_total', 'counter',
           'Points (patches) whose features were extracted.', ('task',)),
    Metric('spacer_extract_seconds_total', 'counter',
           'Seconds spent in successful extraction tasks (images/s = '
           'rate(images) / rate(seconds) per busy worker).', ('task',)),
    Metric('spacer_training_epochs_total', 'counter',
           'Training epochs completed.', ()),
    Metric('spacer_cache_requests_total', 'counter',
           'Classifier and network cache lookups in worker processes.',
           ('cache', 'result')),
    Metric('spacer_lease_restored_total', 'counter',
           "Messages of dead workers the lease reaper put back on their "
           "queue.", ()),
)

QUEUE_METRICS: tuple[Metric, ...] = (
    Metric('spacer_queue_length', 'gauge',
           'Messages waiting in a queue, by priority (0 is served first).',
           ('queue', 'priority')),
    Metric('spacer_queue_oldest_age_seconds', 'gauge',
           'Age of the oldest message waiting in a queue (sent by '
           "spacer_worker's client; others are aged from when the exporter "
           'first saw them).', ('queue',)),
    Metric('spacer_unacked_messages', 'gauge',
           'Messages delivered to workers and not yet acknowledged.', ()),
    Metric('spacer_workers_alive', 'gauge',
           'Workers holding a live lease.', ()),
    Metric('spacer_queue_exporter_errors_total', 'counter',
           'Scrapes that could not read Redis.', ()),
    Metric('spacer_redis_memory_used_bytes', 'gauge',
           'Memory the broker Redis uses (INFO used_memory).', ()),
    Metric('spacer_redis_memory_max_bytes', 'gauge',
           "The broker Redis's maxmemory (0: no limit); at it, Redis "
           '(noeviction) refuses writes.', ()),
    Metric('spacer_redis_evicted_keys_total', 'counter',
           'Keys the broker Redis evicted: with noeviction none should be; '
           'any means queued jobs or results may be gone.', ()),
    Metric('spacer_redis_oom_rejected_total', 'counter',
           'Commands the broker Redis refused because maxmemory was '
           'reached (submissions, results, acks fail).', ()),
)

METRICS: dict[str, Metric] = {m.name: m for m in
                              (*WORKER_METRICS, *QUEUE_METRICS)}
