"""Compose replicas that share a directory keep their own metrics.

``docker compose up --scale train-worker=3`` once gave every replica the
same /tmp volume: each endpoint merged all replicas' files (counts N times
too high) and a starting replica removed the files of the others, whose
pids it cannot see from its own PID namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from spacer_worker.metrics.host import HostCollector, worker_directory

RECORD = '''
import sys
from spacer_worker.metrics import recording
from spacer_worker.metrics.host import worker_directory
recording.enable(worker_directory(sys.argv[1], sys.argv[2]))
recording.metric('spacer_training_epochs_total').inc(int(sys.argv[3]))
print(recording._directory)
'''


def _record(base: Path, node: str, epochs: int) -> Path:
    """A worker process that counted ``epochs`` and exited."""
    out = subprocess.run([sys.executable, '-c', RECORD, str(base), node,
                          str(epochs)], check=True, capture_output=True,
                         text=True)
    return Path(out.stdout.strip())


def _epochs(base: Path) -> float:
    for family in HostCollector(str(base)).collect():
        if family.name == 'spacer_training_epochs':
            return sum(s.value for s in family.samples
                       if s.name.endswith('_total'))
    return 0.0


def test_a_replica_serves_and_cleans_only_its_own_namespace(tmp_path):
    base = tmp_path / 'shared-tmp'
    mine = _record(base, 'train@replica1', 2)
    # What a second container writes into the shared directory: the same
    # node layout, another PID namespace, a pid that is dead here.
    elsewhere = os.stat('/proc/self/ns/pid').st_ino + 1
    other = base / f'train@replica2-{elsewhere}-999999'
    shutil.copytree(mine, other)
    assert _epochs(base) == 2, 'an endpoint counted another replica\'s work'

    # A worker of this container starts: the other replica's files stay.
    worker_directory(str(base), 'train@replica1')
    assert other.is_dir(), 'a starting worker removed another replica\'s files'
    # A dead worker of this namespace is cleaned up.
    assert not mine.exists()
