"""The two calls CoralNet's vision_backend makes on its queue class."""

from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.utils.module_loading import import_string

from spacer_worker.messages import JobMsg

from .models import Job
from .results import handle


def get_queue_class():
    return import_string(settings.SPACER_QUEUE_CHOICE)


def submit(job_msg_for, count: int, spec_level: str = 'medium',
           name: str = '') -> list[int]:
    """Create ``count`` jobs and enqueue each; ``job_msg_for(job_id)``
    builds its JobMsg (job_token = the job id, as CoralNet does)."""
    return [pk for pk, _ in submit_with_handles(job_msg_for, count,
                                                spec_level, name)]


def submit_with_handles(job_msg_for, count: int, spec_level: str = 'medium',
                        name: str = '') -> list[tuple[int, str]]:
    queue = get_queue_class()()
    submitted = []
    for _ in range(count):
        job = Job.objects.create(name=name)
        msg: JobMsg = job_msg_for(job.pk)
        handle = queue.submit_job(msg, job.pk, spec_level)
        submitted.append((job.pk, handle.id))
    return submitted


def collect_spacer_jobs() -> dict:
    """CoralNet's collect_spacer_jobs: chunks of 100, results handled."""
    queue = get_queue_class()()
    collectable = list(queue.get_collectable_jobs())
    statuses: Counter = Counter()
    handled = []
    classes = {}
    for start in range(0, len(collectable), 100):
        results, chunk_statuses = queue.collect_jobs(
            collectable[start:start + 100])
        statuses.update(chunk_statuses)
        for result in results:
            pk = handle(result).pk
            handled.append(pk)
            # Whose classes the result came back in (PySpacer's or ours).
            classes[pk] = [_class_path(result),
                           _class_path(result.original_job),
                           *[_class_path(r) for r in result.results or []]]
    return {'statuses': dict(statuses), 'handled': handled,
            'classes': classes}


def _class_path(obj) -> str:
    return f'{type(obj).__module__}.{type(obj).__qualname__}'
