"""A long training interrupted on real workers (a stop with soft shutdown,
then kill -9 of the whole worker) is delivered again each time and resumes
after its last finished epoch, ending with the classifier of an
uninterrupted run; one past its soft time limit stops cleanly and leaves
the worker serving."""

from __future__ import annotations

import signal
import time

import numpy as np

from spacer_worker.client.jobs import Client, JobState
from spacer_worker.messages import TrainClassifierMsg, TrainingTaskLabels
from spacer_worker.tasks import train_classifier
from spacer_worker.train_classifier import MiniBatchTrainer
from spacer_worker.train_utils import make_random_data
from tests.builders import fs
from tests.distributed.trainings import (
    checkpoint_files,
    epoch,
    probabilities,
    resumed_after,
)
from tests.services import wait_for

EPOCHS = 300
# Small batches (many partial_fit calls) and many epochs, each checkpointed,
# make the training take a while (~10 s here), so each interruption lands
# mid-training on any machine.
TRAINER = MiniBatchTrainer(batch_size=20)


def _message(data_dir, out) -> TrainClassifierMsg:
    np.random.seed(0)
    sets = {}
    for part, count in (('train', 30), ('ref', 4), ('val', 4)):
        keys = [str(data_dir / f'{part}{i}.npz') for i in range(count)]
        sets[part] = make_random_data(count, [1, 2, 3, 4], 40, 16,
                                      fs(data_dir), keys)
    out.mkdir(exist_ok=True)
    return TrainClassifierMsg(
        job_token='long', trainer=TRAINER, nbr_epochs=EPOCHS,
        clf_type='MLP', labels=TrainingTaskLabels(**sets),
        previous_model_locs=[], model_loc=fs(out / 'model.pkl'),
        valresult_loc=fs(out / 'valresult.json'))


def _sigterm(worker) -> float:
    """Stop a worker as Docker does (SIGTERM to its main process); seconds
    until it exited."""
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(30)
    return time.monotonic() - started


def test_interrupted_training_resumes_and_trains_the_same_classifier(
        app, start_worker, data_dir, tmp_path):
    msg = _message(data_dir, tmp_path / 'interrupted')
    out = tmp_path / 'interrupted'
    client = Client(app)
    # As config/train.env sets it up: SIGTERM starts Celery's soft
    # shutdown, which gives running tasks SOFT_SHUTDOWN_TIMEOUT seconds,
    # then cancels and requeues them.
    soft = {'SPACER_LOG_DESTINATION': 'console', 'REMAP_SIGTERM': 'SIGQUIT',
            'SPACER_SOFT_SHUTDOWN_TIMEOUT': '1'}
    first = start_worker('first', queues='train', env=soft)
    handle = client.submit(msg)

    # Given the training has saved a few epochs on the first worker
    wait_for(lambda: epoch(client, handle) >= 4, 120, interval=0.05,
             what='epoch 4 done')
    assert checkpoint_files(out)

    # When that worker is stopped (soft shutdown: out within seconds,
    # though the training has far to go)...
    assert _sigterm(first) < 20
    assert 'Soft Shutdown' in first.log_text()
    reached = epoch(client, handle)
    assert reached < EPOCHS, 'training ended before the stop'

    # ...the next worker gets it at once and resumes after the last epoch
    second = start_worker('second', queues='train', env=soft)
    wait_for(lambda: epoch(client, handle) >= reached + 3, 120,
             interval=0.05, what='training going on')
    assert 4 <= resumed_after(second) < EPOCHS

    # ...and when that one dies whole (kill -9: lost host, OOM kill), the
    # lease reaper hands it to a third, which resumes again
    second.kill()
    killed_at = epoch(client, handle)
    assert killed_at < EPOCHS, 'training ended before the kill'
    third = start_worker('third', queues='train', env=soft)
    result = client.result(handle, timeout=240)
    assert resumed_after(second) < resumed_after(third) < EPOCHS
    assert resumed_after(third) >= killed_at - 1

    # Then it ends with the very classifier an uninterrupted run trains,
    # and its checkpoint is gone
    whole = _message(data_dir, tmp_path / 'whole')
    whole_ret = train_classifier(whole)
    assert result.ref_accs == whole_ret.ref_accs
    assert np.array_equal(probabilities(msg), probabilities(whole))
    assert not checkpoint_files(out)


def test_a_kill_between_the_last_epoch_and_the_commit_resumes_there(
        app, start_worker, data_dir, tmp_path):
    # Given a training whose worker dies whole as it is about to commit
    # (classifier and valresult staged, the result not yet recorded),
    out = tmp_path / 'uncommitted'
    msg = _message(data_dir, out)
    msg.nbr_epochs = 20
    client = Client(app)
    doomed = start_worker('doomed', queues='train',
                          env={'SPACER_LOG_DESTINATION': 'console',
                               'DIST_TEST_KILL_AT_COMMIT': '1'})
    handle = client.submit(msg)
    wait_for(lambda: doomed.proc.poll() is not None, 120, interval=0.1,
             what='the worker to die at the commit')
    assert not (out / 'model.pkl').exists()
    assert checkpoint_files(out), 'the checkpoint outlives the commit'

    # when another worker gets the message, it resumes after the last
    # epoch (not from epoch 0) and commits once,
    rescuer = start_worker('rescuer', queues='train',
                           env={'SPACER_LOG_DESTINATION': 'console'})
    result = client.result(handle, timeout=240)
    assert resumed_after(rescuer) == 20
    assert len(result.ref_accs) == 20

    # and then the checkpoint is gone, the outputs in place.
    wait_for(lambda: not checkpoint_files(out), 10, interval=0.1,
             what='the checkpoint removed after the commit')
    assert (out / 'model.pkl').exists() and (out / 'valresult.json').exists()


def test_a_training_past_its_soft_time_limit_stops_cleanly(
        app, start_worker, data_dir, tmp_path):
    # Given a worker allowing trainings 5 s (soft limit 4.5 s) and a
    # training of the most epochs it admits, several times longer (the
    # float32 steps, their prefetching thread and the loader's in play),
    worker = start_worker('limited', queues='train',
                          env={'SPACER_LOG_DESTINATION': 'console',
                               'SPACER_TRAIN_TIME_LIMIT': '5'})
    endless = _message(data_dir, tmp_path / 'endless')
    endless.nbr_epochs = 500
    client = Client(app)
    started = time.monotonic()
    handle = client.submit(endless)
    # when the soft limit strikes, then the job fails as a time-limit
    # failure, no later than the hard limit would have killed the process,
    wait_for(lambda: client.status(handle).state is JobState.FAILURE, 60,
             interval=0.1, what='the training stopped')
    assert time.monotonic() - started < 12
    status = client.status(handle)
    assert 'soft time limit' in status.error, status.error
    assert status.error_class.endswith('SoftTimeLimitExceeded')
    # it keeps its checkpoint (the same message sent again resumes it),
    assert checkpoint_files(tmp_path / 'endless')
    # without the hard limit having to kill it (nothing kept it running),
    assert 'Hard time limit' not in worker.log_text()
    # and the same worker trains the next job to the end.
    short = _message(data_dir, tmp_path / 'short')
    short.nbr_epochs = 3
    ret = client.result(client.submit(short), timeout=60)
    assert len(ret.ref_accs) == 3
