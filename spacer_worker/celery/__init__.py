"""The Celery app: ``celery -A spacer_worker worker`` finds ``app`` here.

This module only builds the app. Nothing is read at import: the broker,
the backend and every setting below come from :mod:`spacer_worker.config`
when Celery first needs its configuration, so a Django server can import
it before its settings exist. Routing derives from the task table in
:mod:`spacer_worker.messages.table`. The Celery side of a worker lives in
:mod:`spacer_worker.worker` (task adapters, process hooks, consumer, lease
step); the worker loads it, clients never import it.

Running workers::

    # one worker per GPU; the network loads in the pool child, never in
    # the parent (forking after CUDA init breaks CUDA)
    CUDA_VISIBLE_DEVICES=0 celery -A spacer_worker worker -Q extract \\
        -c 1 -n extract-gpu0@%h
    celery -A spacer_worker worker -Q train -c 2 -n train@%h
    celery -A spacer_worker worker -Q classify -c 8 -n classify@%h \\
        --prefetch-multiplier 4

Keep the prefork pool (the default): time limits, revoke with terminate and
``--max-memory-per-child`` need it; the solo and threads pools drop them.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from spacer_worker import config
from spacer_worker.constants import (
    DEFAULT_PRIORITY,
    EXPEDITE_PRIORITY,
    HIGH_SPEC_ANNOTATIONS,
    HIGH_SPEC_KINDS,
    PRIORITY_STEPS,
    QueueKind,
    SpecLevel,
)
from spacer_worker.exceptions import MessageError
from spacer_worker.messages.table import PROCESS_JOB, TASKS, by_celery_name

__all__ = [
    'DEFAULT_PRIORITY', 'EXPEDITE_PRIORITY', 'QueueKind', 'app', 'build_config',
    'create_app', 'queue_for', 'send_options', 'spec_level_of', 'task_kind',
    'time_limits',
]


# Modules only a worker needs; clients never import them.
WORKER_MODULES = ('spacer_worker.worker.adapters', 'spacer_worker.worker.signals',
                  'spacer_worker.worker.metrics')


def queue_name(kind: QueueKind | str) -> str:
    """The configured queue name of a kind of work."""
    return config.get(f'QUEUE_{QueueKind(kind).name}')


def task_kind(task: str, payload: Any = None,
              spec_level: Any = None) -> QueueKind:
    """Kind of work of a contract task; process_job's comes from the
    ``task_name`` in its payload (a JobMsg serialization). A HIGH spec
    level (given, or found by :func:`spec_level_of`) picks the kind's
    high-spec queue."""
    row = by_celery_name(task)
    if row.queue is not None:
        kind = row.queue
    else:
        job_task = payload.get('task_name') if isinstance(payload, dict) \
            else None
        if job_task not in TASKS:
            raise MessageError(
                f"Cannot route {task}: its payload's task_name is "
                f"{job_task!r}, expected one of {', '.join(TASKS)}.")
        kind = TASKS[job_task].queue
    if spec_level_of(kind, payload, spec_level) is SpecLevel.HIGH:
        return HIGH_SPEC_KINDS.get(kind, kind)
    return kind


def spec_level_of(kind: QueueKind, payload: Any = None,
                  spec_level: Any = None) -> SpecLevel:
    """The spec level a sender gave (a SpecLevel, CoralNet's SpacerJobSpec
    or its value), else HIGH for a training of at least
    HIGH_SPEC_ANNOTATIONS annotations (as CoralNet decides), else MEDIUM.
    Image sizes are unknown before the image is read, so big extractions
    are HIGH only when the sender says so."""
    if spec_level is not None:
        # An enum member by its value or name ('high', 'HIGH', 'H'...).
        for text in (getattr(spec_level, 'value', spec_level),
                     getattr(spec_level, 'name', None)):
            text = str(text).strip().lower() if text is not None else ''
            for level in SpecLevel:
                if text and (text == level.value or text == level.value[0]):
                    return level
        raise MessageError(
            f"spec_level {spec_level!r}: expected one of "
            f"{', '.join(SpecLevel)} (or CoralNet's SpacerJobSpec).")
    if kind is QueueKind.TRAIN and \
            _annotation_count(payload) >= HIGH_SPEC_ANNOTATIONS:
        return SpecLevel.HIGH
    return SpecLevel.MEDIUM


def _annotation_count(payload: Any) -> int:
    # A TrainClassifierMsg serialization, or a JobMsg of them.
    if not isinstance(payload, dict):
        return 0
    messages = payload.get('tasks') if 'tasks' in payload else [payload]
    count = 0
    for msg in messages if isinstance(messages, list) else []:
        labels = msg.get('labels') if isinstance(msg, dict) else None
        for split in (labels or {}).values() if isinstance(labels, dict) \
                else []:
            data = split.get('data') if isinstance(split, dict) else None
            if isinstance(data, dict):
                count += sum(len(v) for v in data.values()
                             if isinstance(v, list))
    return count


def queue_for(task: str, payload: Any = None, spec_level: Any = None) -> str:
    """Queue a contract task goes to (process_job: its tasks' queue)."""
    return queue_name(task_kind(task, payload, spec_level))


def time_limits(kind: QueueKind | str) -> tuple[int, int]:
    """(soft, hard) time limits in seconds for a kind of work.

    The soft limit raises inside the task, which then fails with a clear
    error and leaves no half-written output; the hard limit kills the pool
    process for a task stuck in C code.
    """
    hard = config.get(f'{QueueKind(kind).name}_TIME_LIMIT')
    if hard <= 0:
        raise MessageError(f'{QueueKind(kind).name}_TIME_LIMIT must be a '
                           f'positive number of seconds, got {hard!r}.')
    return max(1, int(hard * 0.9)), hard


def send_options(task: str, payload: Any = None,
                 spec_level: Any = None) -> dict[str, Any]:
    """apply_async/send_task options for a contract task: queue, time
    limits of its kind and spec level (process_job gets its tasks' limits,
    not the default), and the default priority."""
    kind = task_kind(task, payload, spec_level)
    soft, hard = time_limits(kind)
    return {'queue': queue_name(kind), 'soft_time_limit': soft,
            'time_limit': hard, 'priority': DEFAULT_PRIORITY}


def route_task(name: str, args: Any, kwargs: Any, options: dict,
               task: Any = None, **_: Any) -> dict | None:
    """Celery router: contract tasks to their queue at the sender.

    Options the caller passes (queue=, priority=) win over these.
    """
    if not name.startswith('spacer.'):
        return None
    payload = args[0] if args else None
    try:
        return {'queue': queue_for(name, payload),
                'priority': DEFAULT_PRIORITY}
    except MessageError:
        # Unroutable (say, a bad process_job payload): the caller's queue,
        # else the default one; the worker then fails it with this error.
        return {'priority': DEFAULT_PRIORITY}


def visibility_timeout() -> int:
    explicit = config.get('VISIBILITY_TIMEOUT')
    if explicit > 0:
        return explicit
    return max(time_limits(kind)[1] for kind in QueueKind) + 3600


def build_config() -> dict[str, Any]:
    """The Celery configuration, read from spacer_worker.config now."""
    from kombu import Exchange, Queue

    annotations = {}
    for row in [*TASKS.values(), PROCESS_JOB]:
        # process_job defaults to the most generous limits; send_options()
        # sends the limits of the job's own kind with each message.
        soft, hard = time_limits(row.queue or QueueKind.TRAIN)
        annotations[row.celery_name] = {
            'soft_time_limit': soft, 'time_limit': hard,
            # Transient errors and lost pool processes share this budget.
            'max_retries': config.get('TASK_MAX_RETRIES'),
            # Celery's autoretry backoff cap (SpacerTask.autoretry_for).
            'retry_backoff_max': config.get('RETRY_BACKOFF_MAX'),
            'default_retry_delay': 2,
        }

    broker = config.broker_url()
    return {
        'broker_url': broker,
        'result_backend': config.result_backend_url(),
        # JSON only: with pickle, anyone who can write to Redis runs code
        # on every worker. Payloads are PySpacer's JSON anyway.
        'task_serializer': 'json',
        'result_serializer': 'json',
        'accept_content': ['json'],
        'result_accept_content': ['json'],
        'event_serializer': 'json',

        # Each queue gets its own direct exchange and routing key: with bare
        # Queue(name) Celery hands every queue one shared default Exchange
        # object, and the banner (and AMQP brokers) then bind all three to
        # the last queue's name.
        'task_queues': [Queue(name, Exchange(name, type='direct'),
                              routing_key=name)
                        for name in (queue_name(kind) for kind in QueueKind)],
        'task_default_queue': queue_name(QueueKind.CLASSIFY),
        'task_routes': (route_task,),
        'task_annotations': annotations,

        # Late acks: a message leaves Redis only when its task finished, so
        # a worker dying mid-task does not lose it. A pool child killed
        # under a live parent (OOM, segfault) sends it back at once; a whole
        # worker dying is covered by leases (spacer_worker.worker.leases).
        'task_acks_late': True,
        'task_reject_on_worker_lost': True,
        # Failures and time-outs are final answers, not reasons to re-run.
        'task_acks_on_failure_or_timeout': True,
        # A pool process killed under a task (OOM) retries it, counted, so a
        # task that kills every process it runs in ends in FAILURE instead
        # of being requeued forever.
        'task_retry_on_worker_lost': True,
        # One message at a time per process: extraction and training tasks
        # are long, so prefetching would park work behind a busy process
        # while another worker idles. Classify workers may raise it with
        # --prefetch-multiplier.
        'worker_prefetch_multiplier': 1,
        'broker_transport_options': {
            # Redis delivers an unacked message again after this long, even
            # to a live worker still running it (celery#5935): keep it above
            # the longest hard time limit so no live task runs twice.
            'visibility_timeout': visibility_timeout(),
            # Message priorities: one Redis list per step, served 0 first.
            # Explicit steps 0-9 so every priority a sender uses (Celery's
            # default steps are 0, 3, 6, 9) lands on a list we consume.
            'priority_steps': PRIORITY_STEPS,
            'queue_order_strategy': 'priority',
        },
        'task_default_priority': DEFAULT_PRIORITY,
        'broker_connection_retry_on_startup': True,
        'broker_connection_max_retries': None,   # wait out Redis restarts
        # A result write during a Redis restart is retried, not dropped.
        'result_backend_always_retry': True,
        'result_backend_max_retries': 20,
        'redis_retry_on_timeout': True,
        'result_expires': config.get('RESULT_EXPIRES'),
        # STARTED tells a client that a worker runs the task (not queued).
        'task_track_started': True,
        # Events for Flower: workers and task life cycles (from received
        # on). No 'task-sent' event: it doubles the cost of every send
        # (measured: 0.8 -> 1.4 ms) for a queued state clients already get
        # from the result backend.
        'worker_send_task_events': True,
        'task_send_sent_event': False,
        # Preloading a network in worker_process_init can take longer than
        # Celery's 4 s default before the pool gives up on the child.
        'worker_proc_alive_timeout': 120.0 if config.get('PRELOAD_EXTRACTOR')
        else 4.0,
        # A malformed message body fails its task instead of vanishing.
        'worker_consumer': 'spacer_worker.worker.consumer:Consumer',
        'imports': WORKER_MODULES,
        'worker_hijack_root_logger': False,
        # A stopping worker (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT)
        # lets running tasks finish for this long, then cancels and requeues
        # them; a training resumes from its last epoch checkpoint.
        'worker_soft_shutdown_timeout': config.get('SOFT_SHUTDOWN_TIMEOUT'),
    }


def create_app(main: str = 'spacer_worker', set_as_current: bool = True,
               **overrides: Any) -> Celery:
    """A configured-on-first-use app; ``overrides`` win over the settings
    (tests pass ``broker_url=...``; the demo an in-memory broker)."""
    app = Celery(main, set_as_current=set_as_current)
    app.add_defaults(lambda: {**build_config(), **overrides})
    # Renews this worker's lease and requeues the messages of dead workers.
    app.steps['worker'].add('spacer_worker.worker.leases:LeaseStep')
    return app


app = create_app()
