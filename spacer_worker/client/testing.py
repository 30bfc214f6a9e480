"""Helpers for a web app's own tests that run jobs through CeleryQueue.

CoralNet's tests reset their storage between tests, which is where its
``LocalQueue`` keeps results. A ``CeleryQueue`` keeps its books in Redis
instead, so a test suite calls :func:`wait_for_jobs` where it needs the
workers to have finished, and :func:`clear_books` in its tear-down::

    from spacer_worker.client.testing import clear_books, wait_for_jobs

    class VisionBackendTest(TestCase):
        def tearDown(self):
            clear_books(get_queue_class()())

        def test_extract(self):
            queue = get_queue_class()()
            queue.submit_job(job_msg, job.pk, spec_level)
            wait_for_jobs(queue, timeout=60)
            collect_spacer_jobs()

Both act on one queue's books (its ``prefix``): give each test run its own
prefix or Redis database when suites run in parallel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacer_worker.client.coralnet import CeleryJob, CeleryQueue


def wait_for_jobs(queue: CeleryQueue, timeout: float = 60.0,
                  poll: float = 0.2) -> None:
    """Return once every job on ``queue``'s books has finished (succeeded,
    failed, was revoked or lost), so a collect call sees them all. Raises
    TimeoutError naming the jobs still waiting or running."""
    deadline = time.monotonic() + timeout
    while True:
        # Every job on the books (a collect cycle lists a window only).
        waiting = []
        for jobs in _pages(queue.iter_jobs()):
            statuses = queue.client.statuses([job.task_id for job in jobs])
            waiting += [f'{job} ({status.state})'
                        for job, status in zip(jobs, statuses, strict=True)
                        if not status.finished]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f'{len(waiting)} job(s) not finished after {timeout:g} s: '
                f'{", ".join(waiting[:10])}'
                f'{" ..." if len(waiting) > 10 else ""}. Is a worker '
                f'consuming their queues (spacer-worker status)?')
        time.sleep(poll)


def clear_books(queue: CeleryQueue) -> int:
    """Forget every job on ``queue``'s books: their records, results and
    resubmission guards, so the next test starts from none. Jobs still
    queued or running are not stopped; their results are then never
    collected. Returns how many jobs were on the books."""
    from spacer_worker.client.submission import dedupe_key

    redis = queue.redis
    backend = queue.client.app.backend
    jobs = list(queue.iter_jobs())
    keys = list(redis.scan_iter(match=_escaped(queue.prefix) + '*',
                                count=1000))
    for job in jobs:
        keys.append(backend.get_key_for_task(job.task_id))
        # The guard that turns a resubmission into the same job.
        keys.append(dedupe_key('spacer.process_job', None,
                               queue.idempotency_key(job.job_id)))
    for start in range(0, len(keys), 500):
        redis.delete(*keys[start:start + 500])
    return len(jobs)


def _pages(jobs: Iterator[CeleryJob], size: int = 500
           ) -> Iterator[list[CeleryJob]]:
    page: list[CeleryJob] = []
    for job in jobs:
        page.append(job)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _escaped(prefix: str) -> str:
    """``prefix`` as a literal in a Redis MATCH pattern."""
    return ''.join('\\' + c if c in '*?[]\\' else c for c in prefix)
