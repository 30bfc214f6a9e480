"""Bare Celery, for comparison in benchmarks/dispatch.py: one trivial task,
Celery's defaults except JSON (``celery -A bare_celery worker``)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

app = Celery('bare', broker=os.environ.get('BENCH_BROKER_URL'),
             backend=os.environ.get('BENCH_BROKER_URL'))
app.conf.update(task_serializer='json', result_serializer='json',
                accept_content=['json'], worker_hijack_root_logger=False)


@app.task(name='bare.echo')
def echo(payload: Any) -> Any:
    return {'runtime': 0.0, 'scores': [[1, 1, [0.25, 0.75]]],
            'classes': [1, 2], 'valid_rowcol': True}
