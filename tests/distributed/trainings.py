"""What the real-worker training tests read back: a job's epoch from its
progress, a classifier's probabilities on the validation points, the
checkpoint files beside a model, and where a worker resumed."""

from __future__ import annotations

import numpy as np

from spacer_worker.client.jobs import JobState
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.storage import load_classifier


def probabilities(msg) -> np.ndarray:
    """The stored classifier's probabilities on the message's val points."""
    clf = load_classifier(msg.model_loc)
    x = np.concatenate([ImageFeatures.load(loc).feature_array()
                        for loc in msg.labels.val.keys()])
    return clf.predict_proba(x.astype(np.float64))


def epoch(client, handle) -> int:
    """Epochs a running training has reported (0 before the first)."""
    status = client.status(handle)
    assert status.state is not JobState.FAILURE, status.error
    return (status.progress or {}).get('epoch') or 0


def kill_after_epoch(client, handle, worker, at: int, epochs: int) -> None:
    """Kill ``worker`` whole once the training ``handle`` has finished
    epoch ``at`` of ``epochs``; it must not have ended by then."""
    from tests.services import wait_for

    wait_for(lambda: epoch(client, handle) >= at, 300, interval=0.05,
             what=f'epoch {at} of the training to be killed')
    worker.kill()
    assert epoch(client, handle) < epochs, 'training ended before the kill'


def checkpoint_files(out) -> list:
    return [p for p in out.iterdir() if '.checkpoint-' in p.name]


def resumed_after(worker) -> int:
    """The epoch a worker's run resumed after (from its log)."""
    lines = [line for line in worker.log_text().splitlines()
             if 'Resuming training from its checkpoint' in line]
    assert lines, worker.log_text()[-3000:]
    return int(lines[0].split('after epoch ')[1].split()[0])
