"""Classifier pickle attacks through a real worker on a real Redis.

One ``celery worker`` process (one pool child) trains an MLP on a toy set
and classifies with it; then it is sent the pickle attacks of issue 9 as
``previous_model_locs`` and ``classifier_loc``. Each must end in a typed
FAILURE, and the same process must then train to the same accuracy and
classify to the same scores. With plain pickle the first attack alone
takes this toy MLP from 1.0 to chance (0.33): it replaces
``AdamOptimizer._get_updates`` for every later training in the process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spacer_worker.client.jobs import Client
from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels
from spacer_worker.exceptions import ClassifierLoadError
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    TrainClassifierMsg,
    TrainingTaskLabels,
)
from spacer_worker.train_classifier import MiniBatchTrainer
from tests.distributed.worker_hooks import RUNS_KEY
from tests.storage import pickle_attacks as attacks

TIMEOUT = 120
# (attack, sent as) - 'train': a previous model; 'classify': the classifier.
ATTACKS = [
    ('adam_get_updates', 'train'),
    ('calibrated_predict_proba', 'classify'),
    ('function_defaults', 'train'),
    ('function_dict', 'classify'),
    ('setstate_shadow', 'train'),
    ('list_range', 'classify'),
    ('bytearray_of_size', 'train'),
    ('randomstate_ctor', 'classify'),
    ('object_array', 'train'),
    ('dtype_singleton', 'classify'),
    ('bytearray8_length', 'train'),
    ('colliding_dict_keys', 'classify'),   # minutes of CPU for plain pickle
    ('colliding_set_items', 'train'),
]


def fs(path: Path) -> DataLocation:
    return DataLocation('filesystem', str(path))


def toy_labels(data_dir: Path) -> TrainingTaskLabels:
    """Three classes, each a direction in an 8-dim feature space plus
    noise: an MLP learns it perfectly in 20 epochs."""
    rng = np.random.default_rng(0)

    def images(name: str, count: int) -> ImageLabels:
        labels = {}
        for i in range(count):
            classes = rng.integers(0, 3, 20)
            feat = (np.eye(8)[classes] * 2.0
                    + rng.normal(0, 0.5, (20, 8))).astype(np.float32)
            loc = fs(data_dir / f'{name}{i}.featurevector')
            ImageFeatures.from_arrays(list(range(20)), [5] * 20, feat
                                      ).store(loc)
            labels[loc] = [(row, 5, int(c) + 1)
                           for row, c in enumerate(classes)]
        return ImageLabels(labels)

    return TrainingTaskLabels(train=images('train', 8), ref=images('ref', 3),
                              val=images('val', 3))


def train_msg(data_dir: Path, labels: TrainingTaskLabels, name: str,
              previous: list[DataLocation] = ()) -> TrainClassifierMsg:
    return TrainClassifierMsg(
        job_token=name, trainer=MiniBatchTrainer(mlp_learning_rate_init=0.01),
        nbr_epochs=20, clf_type='MLP', labels=labels,
        previous_model_locs=list(previous),
        model_loc=fs(data_dir / f'{name}.pkl'),
        valresult_loc=fs(data_dir / f'{name}.valresult.json'))


@pytest.mark.slow
def test_pickle_attacks_fail_typed_and_leave_the_worker_sound(
        app, start_worker, data_dir, redis_db):
    client = Client(app)
    # The storage sandbox (issue 9) admits only the test's directory.
    roots = {'SPACER_FILESYSTEM_READ_ROOTS': str(data_dir),
             'SPACER_FILESYSTEM_WRITE_ROOTS': str(data_dir)}
    start_worker('cpu', queues='train,classify', concurrency=1, env=roots)
    labels = toy_labels(data_dir)
    val_features = next(iter(labels.val.keys()))

    def classify(classifier: DataLocation, name: str) -> ClassifyFeaturesMsg:
        return ClassifyFeaturesMsg(job_token=name, feature_loc=val_features,
                                   classifier_loc=classifier)

    # Given a training and a classification that work
    before = client.result(client.submit(
        train_msg(data_dir, labels, 'before')), timeout=TIMEOUT)
    assert before.acc == 1.0
    model = fs(data_dir / 'before.pkl')
    scores = client.result(client.submit(classify(model, 'scores-before')),
                           timeout=TIMEOUT).scores

    # When every attack is sent to the same worker
    for name, sent_as in ATTACKS:
        evil = data_dir / f'{name}.pkl'
        evil.write_bytes(attacks.ALL[name]())
        msg = (train_msg(data_dir, labels, f'attack-{name}', [fs(evil)])
               if sent_as == 'train' else classify(fs(evil), name))
        handle = client.submit(msg)
        # Then each ends in a typed FAILURE naming the pickle
        with pytest.raises(ClassifierLoadError, match=f'{name}.pkl'):
            client.result(handle, timeout=TIMEOUT)
        status = client.status(handle)
        assert status.state == 'FAILURE'
        assert status.error_type in ('UnsafePickleError',
                                     'ClassifierLoadError'), status
        assert not (data_dir / f'attack-{name}.pkl').exists()

    # And the same process still trains and classifies exactly as before
    after = client.result(client.submit(
        train_msg(data_dir, labels, 'after', [model])), timeout=TIMEOUT)
    assert after.acc == before.acc
    assert after.pc_accs == [before.acc]
    again = client.result(client.submit(classify(fs(data_dir / 'after.pkl'),
                                                 'scores-after')),
                          timeout=TIMEOUT).scores
    assert again == scores
    runs = [json.loads(r) for r in redis_db.lrange(RUNS_KEY, 0, -1)]
    assert len(runs) == 4 + len(ATTACKS)
    assert len({run['pid'] for run in runs}) == 1
