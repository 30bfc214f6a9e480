"""What a worker's endpoint exports before its first task.

A counter series that first appears at 1 has no earlier sample, so
increase() and rate() miss that first event: the first failure of each
kind, not only the first success, must be there at zero from the start.
And a 7-day train_high training must land in a bucket of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spacer_worker.config import SETTINGS
from spacer_worker.metrics.host import HostCollector

START = '''
import sys
from spacer_worker.metrics import recording
from spacer_worker.metrics.host import worker_directory
from spacer_worker.worker import metrics
recording.enable(worker_directory(sys.argv[1], 'fresh@host'))
metrics._zero_known_series()
'''


def _samples(base: Path) -> list:
    subprocess.run([sys.executable, '-c', START, str(base)], check=True)
    return [s for family in HostCollector(str(base)).collect()
            for s in family.samples]


def test_failure_series_exist_at_zero_before_the_first_failure(tmp_path):
    samples = _samples(tmp_path / 'metrics')
    tasks = {(s.labels['task'], s.labels['outcome'], s.labels['error']): s.value
             for s in samples if s.name == 'spacer_tasks_total'}
    for key in [('spacer.extract_features', 'failure', 'DataNotFoundError'),
                ('spacer.train_classifier', 'failure', 'SoftTimeLimitExceeded'),
                ('spacer.train_classifier', 'failure', 'WorkerLostError'),
                ('spacer.classify_features', 'retry', 'StorageUnavailableError'),
                ('spacer.extract_features', 'revoked', '')]:
        assert tasks.get(key) == 0, f'{key} is not exported at zero'


def test_latency_buckets_reach_the_longest_time_limit(tmp_path):
    samples = _samples(tmp_path / 'metrics')
    bounds = {float(s.labels['le']) for s in samples
              if s.name == 'spacer_task_duration_seconds_bucket'
              and s.labels['le'] != '+Inf'}
    longest = max(s.default for name, s in SETTINGS.items()
                  if name.endswith('TIME_LIMIT') and isinstance(s.default, int))
    assert max(bounds) >= longest
