"""Against PySpacer 0.14.0 (reference venv): the same splits, the same
training, and classifiers that classify the same on either side."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.messages import ClassifyFeaturesMsg, TrainClassifierMsg
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.tasks import classify_features, train_classifier
from tests.builders import random_labels
from tests.reference import run_reference

pytestmark = pytest.mark.reference

REFERENCE = '''
import json
from spacer.data_classes import DataLocation, ImageLabels
from spacer.messages import ClassifyFeaturesMsg, TrainClassifierMsg
from spacer.task_utils import SplitMode, preprocess_labels
from spacer.tasks import classify_features, train_classifier

labels = ImageLabels.deserialize(PAYLOAD['labels'])
splits = {}
for mode in SplitMode:
    split = preprocess_labels(labels, split_mode=mode)
    splits[mode.value] = split.serialize()
trained = {}
for clf_type, msg in PAYLOAD['train_msgs'].items():
    ret = train_classifier(TrainClassifierMsg.deserialize(msg))
    trained[clf_type] = ret.serialize()

def classify(model, feature_key):
    ret = classify_features(ClassifyFeaturesMsg(
        job_token='c', feature_loc=DataLocation('filesystem', feature_key),
        classifier_loc=DataLocation('filesystem', model)))
    return ret.serialize()

classified = {
    name: [classify(model, key) for key in PAYLOAD['classify_keys']]
    for name, model in PAYLOAD['models'].items()}
RESULT = dict(splits=splits, trained=trained, classified=classified)
'''


@pytest.fixture(scope='module')
def both(tmp_path_factory, pyspacer_reference):
    """Train here and in PySpacer on the same files; classify with both
    sides' models in PySpacer (one reference run for the whole module)."""
    root = tmp_path_factory.mktemp('reference')
    labels = random_labels(root, im_count=40, points=50, dim=32)
    split = preprocess_labels(labels, split_mode=SplitMode.POINTS)

    def msg(side, clf_type):
        return TrainClassifierMsg(
            job_token=f'{side}-{clf_type}', trainer='minibatch',
            nbr_epochs=3, clf_type=clf_type, labels=split,
            previous_model_locs=[],
            model_loc=DataLocation('filesystem',
                                   str(root / f'{side}-{clf_type}.pkl')),
            valresult_loc=DataLocation('filesystem',
                                       str(root / f'{side}-{clf_type}.json')))

    # float64: PySpacer's arithmetic, so the very same classifier.
    os.environ['SPACER_TRAINING_PRECISION'] = 'float64'
    try:
        ours = {t: train_classifier(msg('ours', t)) for t in ('MLP', 'LR')}
    finally:
        del os.environ['SPACER_TRAINING_PRECISION']
    classify_keys = [loc.key for loc in list(split.val.keys())[:3]]
    models = {f'{side}-{t}': str(root / f'{side}-{t}.pkl')
              for side in ('ours', 'pyspacer') for t in ('MLP', 'LR')}
    theirs = run_reference(REFERENCE, dict(
        labels=labels.serialize(),
        train_msgs={t: msg('pyspacer', t).serialize() for t in ('MLP', 'LR')},
        classify_keys=classify_keys, models=models))
    return dict(labels=labels, ours=ours, theirs=theirs, models=models,
                classify_keys=classify_keys, root=root)


@pytest.mark.parametrize('mode', list(SplitMode))
def test_splits_are_pyspacers(both, mode):
    ours = preprocess_labels(both['labels'], split_mode=mode).serialize()
    # Same annotations in the same sets, images and order.
    assert json.loads(json.dumps(ours)) == both['theirs']['splits'][mode.value]


@pytest.mark.parametrize('clf_type', ['MLP', 'LR'])
def test_training_follows_pyspacers_course(both, clf_type):
    ours = both['ours'][clf_type]
    theirs = both['theirs']['trained'][clf_type]
    # Same batches, same seeds: the same accuracy after every epoch (up to
    # one reference point, for BLAS rounding on other machines).
    np.testing.assert_allclose(ours.ref_accs, theirs['ref_accs'], atol=0.011)
    assert ours.acc == pytest.approx(theirs['acc'], abs=0.011)


@pytest.mark.parametrize('side', ['pyspacer', 'ours'])
@pytest.mark.parametrize('clf_type', ['MLP', 'LR'])
def test_models_classify_the_same_on_both_sides(both, side, clf_type):
    name = f'{side}-{clf_type}'
    for key, theirs in zip(both['classify_keys'],
                           both['theirs']['classified'][name], strict=True):
        ours = classify_features(ClassifyFeaturesMsg(
            job_token='c', feature_loc=DataLocation('filesystem', key),
            classifier_loc=DataLocation('filesystem', both['models'][name])))
        assert ours.classes == theirs['classes']
        assert [list(s[:2]) for s in ours.scores] == \
            [list(s[:2]) for s in theirs['scores']]
        our_scores = np.array([s[2] for s in ours.scores])
        their_scores = np.array([s[2] for s in theirs['scores']])
        np.testing.assert_array_equal(our_scores.argmax(1),
                                      their_scores.argmax(1))
        np.testing.assert_allclose(our_scores, their_scores, atol=1e-12)
