"""One message, one classifier: trainings on real workers at the size where
the MLP's products engine matters (1,280-dim features, PySpacer's batch
sizes) end with the same predictions, bit for bit, whichever worker ran
them and whether or not one was killed on the way.

The two workers are made to disagree about which engine is faster (one
has NumPy's products slowed by 1 ms a call, the other ONNX Runtime's), so
a choice by timing would split them; the engine rule and the checkpoint's
record of the engine must not let it. Where two workers are set to
different engines, the one that resumes keeps the engine the checkpoint
names.
"""

from __future__ import annotations

import numpy as np

from spacer_worker.client.jobs import Client
from spacer_worker.messages import TrainClassifierMsg, TrainingTaskLabels
from spacer_worker.tasks import train_classifier
from spacer_worker.train_classifier import MiniBatchTrainer
from spacer_worker.train_utils import make_random_data
from tests.builders import fs
from tests.distributed.trainings import (
    kill_after_epoch,
    probabilities,
    resumed_after,
)

DIM = 1280           # EfficientNet-b0's features
POINTS = 200         # per image, as CoralNet annotates
EPOCHS = 10
CLASSES = [1, 2, 3, 4, 5]


def _data(data_dir) -> TrainingTaskLabels:
    np.random.seed(7)
    sets = {}
    for part, count in (('train', 30), ('ref', 3), ('val', 4)):
        keys = [str(data_dir / f'{part}{i}.npz') for i in range(count)]
        sets[part] = make_random_data(count, CLASSES, POINTS, DIM,
                                      fs(data_dir), keys)
    # Classes that overlap: the classifier is still learning at the end,
    # so any difference in the arithmetic shows in its predictions.
    return TrainingTaskLabels(**sets)


def _message(labels, out) -> TrainClassifierMsg:
    out.mkdir(exist_ok=True)
    return TrainClassifierMsg(
        job_token=out.name, trainer=MiniBatchTrainer(), nbr_epochs=EPOCHS,
        clf_type='MLP', labels=labels, previous_model_locs=[],
        model_loc=fs(out / 'model.pkl'),
        valresult_loc=fs(out / 'valresult.json'))


def _worker_env(slow: str) -> dict:
    return {'SPACER_LOG_DESTINATION': 'console',
            'DIST_TEST_SLOW_PRODUCTS': slow}


def test_trainings_of_one_message_agree_across_workers_and_a_kill(
        app, start_worker, data_dir, tmp_path):
    labels = _data(data_dir)
    client = Client(app)

    # Given a worker on which ONNX Runtime's products are the slower...
    first = start_worker('numpy-fast', queues='train',
                         env=_worker_env('onnxruntime'))
    one = _message(labels, tmp_path / 'one')
    client.result(client.submit(one), timeout=300)
    first.stop()

    # ...and one on which NumPy's are,
    second = start_worker('ort-fast', queues='train',
                          env=_worker_env('numpy'))
    two = _message(labels, tmp_path / 'two')
    client.result(client.submit(two), timeout=300)
    second.stop()

    # when a third training starts on the first kind of worker and that
    # worker is killed whole after a few epochs, the second kind resumes it
    killed = start_worker('killed', queues='train',
                          env=_worker_env('onnxruntime'))
    resumed = _message(labels, tmp_path / 'resumed')
    handle = client.submit(resumed)
    kill_after_epoch(client, handle, killed, at=3, epochs=EPOCHS)
    rescuer = start_worker('rescuer', queues='train',
                           env=_worker_env('numpy'))
    client.result(handle, timeout=300)
    assert resumed_after(rescuer) >= 3

    # Then all three trained the same classifier, to the last bit.
    expected = probabilities(one)
    assert np.array_equal(probabilities(two), expected)
    assert np.array_equal(probabilities(resumed), expected)


def test_a_resumed_training_keeps_the_engine_its_checkpoint_names(
        app, start_worker, data_dir, tmp_path, monkeypatch):
    labels = _data(data_dir)
    client = Client(app)
    # Given a training started on a worker set to ONNX Runtime's products
    # and killed whole after a few epochs,
    killed = start_worker('onnxruntime', queues='train', env={
        'SPACER_LOG_DESTINATION': 'console',
        'SPACER_TRAINING_MATMUL': 'onnxruntime'})
    resumed = _message(labels, tmp_path / 'resumed')
    handle = client.submit(resumed)
    kill_after_epoch(client, handle, killed, at=3, epochs=EPOCHS)

    # when a worker set to NumPy's products resumes it,
    rescuer = start_worker('numpy', queues='train', env={
        'SPACER_LOG_DESTINATION': 'console',
        'SPACER_TRAINING_MATMUL': 'numpy'})
    client.result(handle, timeout=300)
    assert resumed_after(rescuer) >= 3

    # then it ends with the classifier of an uninterrupted ONNX Runtime
    # run, not a NumPy one (the two differ: the check is not vacuous).
    runs = {}
    for engine in ('onnxruntime', 'numpy'):
        monkeypatch.setenv('SPACER_TRAINING_MATMUL', engine)
        runs[engine] = _message(labels, tmp_path / engine)
        train_classifier(runs[engine])
    assert not np.array_equal(probabilities(runs['numpy']),
                              probabilities(runs['onnxruntime']))
    assert np.array_equal(probabilities(resumed),
                          probabilities(runs['onnxruntime']))
