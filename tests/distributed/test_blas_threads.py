"""A training gets the CPUs its worker does not give to other tasks: every
CPU in a worker that runs one task at a time, one per task when the worker
runs one task per CPU (BLAS_THREADS=0, the default)."""

from __future__ import annotations

import os
import re

from spacer_worker.client.jobs import Client
from tests.builders import train_msg


def _blas_threads_logged(worker) -> int:
    found = re.findall(r'Training \S+ \(MLP, (\d+) BLAS threads\)',
                       worker.log_text())
    assert found, worker.log_text()[-3000:]
    return int(found[-1])


def test_blas_threads_follow_the_workers_concurrency(app, start_worker,
                                                     tmp_path):
    cpus = len(os.sched_getaffinity(0))
    client = Client(app)
    for concurrency, expected in ((1, cpus), (2 * cpus, 1)):
        worker = start_worker(f'c{concurrency}', queues='train',
                              concurrency=concurrency,
                              env={'SPACER_LOG_DESTINATION': 'console'})
        data = tmp_path / f'c{concurrency}'
        data.mkdir()
        result = client.result(client.submit(train_msg(data, epochs=1)),
                               timeout=120)
        assert result.acc >= 0
        assert _blas_threads_logged(worker) == expected
        worker.stop()
