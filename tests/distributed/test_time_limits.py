"""A soft time limit reads as one, wherever its signal lands.

Celery's soft time limit is SIGUSR1, turned into SoftTimeLimitExceeded by
billiard's handler in the pool child, wherever that child is. Some of our
handlers turn any failure into their own error (untrusted pickle bytes:
ClassifierLoadError; weights PyTorch cannot load: WeightsLoadError); a
limit landing inside one must still end the job as billiard's
SoftTimeLimitExceeded, which CoralNet files as an admin error, and not as
bad input blamed on the user's data. A real worker gets the real signal,
aimed by ``worker_hooks`` (``DIST_TEST_SOFT_LIMIT_IN``): the signal, its
handler and our code are all real, only the moment is chosen.
"""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.client.jobs import Client
from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.exceptions import JobFailedError, failures
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    ExtractFeaturesMsg,
    JobMsg,
    JobReturnMsg,
)
from spacer_worker.storage.classifiers import dump_classifier
from tests.builders import make_image
from tests.storage.test_classifiers import train

TIMEOUT = 120


def fs(path) -> DataLocation:
    return DataLocation('filesystem', str(path))


def _classify(tmp_path) -> ClassifyFeaturesMsg:
    classifier = tmp_path / 'model.pkl'
    classifier.write_bytes(dump_classifier(train('sgd')))
    features = fs(tmp_path / 'img.featurevector')
    ImageFeatures.from_arrays([1, 2], [3, 4],
                              [[0.1] * 4, [0.2] * 4]).store(features)
    return ClassifyFeaturesMsg(job_token='late', feature_loc=features,
                               classifier_loc=fs(classifier))


def _extract(tmp_path) -> ExtractFeaturesMsg:
    from spacer_worker.extractors import EfficientNetExtractor
    make_image(tmp_path / 'image.png', seed=1)
    weights = tmp_path / 'efficientnet_b0_ver1.pt'
    weights.write_bytes(b'never read: the limit lands first')
    return ExtractFeaturesMsg(
        job_token='late', rowcols=[(10, 10)],
        extractor=EfficientNetExtractor(
            data_locations={'weights': fs(weights)}),
        image_loc=fs(tmp_path / 'image.png'),
        feature_loc=fs(tmp_path / 'out.featurevector'))


# (what runs, where the limit lands, the error that handler would make)
CASES = [
    (_classify, 'spacer_worker.storage.classifiers:restricted_loads',
     'ClassifierLoadError'),
    # Weights are read by pt_reader on a CPU worker (torch.load with torch).
    (_extract, 'spacer_worker.extractors.runtime.pt_reader:load',
     'WeightsLoadError'),
]


def _worker(start_worker, tmp_path, target: str) -> None:
    start_worker('late', queues='extract,classify', env={
        'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path),
        'DIST_TEST_SOFT_LIMIT_IN': target})


@pytest.mark.parametrize('build, target, relabelled', CASES)
def test_a_limit_inside_a_handler_fails_the_task_as_a_time_limit(
        app, start_worker, tmp_path, build, target, relabelled):
    _worker(start_worker, tmp_path, target)
    client = Client(app)
    handle = client.submit(build(tmp_path))
    # The client raises it as a job failure, not as the data's fault.
    with pytest.raises(JobFailedError, match='soft time limit'):
        client.result(handle, timeout=TIMEOUT)
    status = client.status(handle)
    assert status.state == 'FAILURE'
    assert status.error_class == failures.SOFT_TIME_LIMIT, status
    assert status.error_type == 'SoftTimeLimitExceeded', status
    assert 'ran past its soft time limit' in status.error
    assert relabelled not in (status.traceback or '')
    assert not (tmp_path / 'out.featurevector').exists()


@pytest.mark.parametrize('build, target, relabelled', CASES)
def test_a_limit_inside_a_handler_ends_a_job_in_its_line(
        app, start_worker, tmp_path, build, target, relabelled):
    _worker(start_worker, tmp_path, target)
    client = Client(app)
    msg = build(tmp_path)
    name = ('extract_features' if isinstance(msg, ExtractFeaturesMsg)
            else 'classify_features')
    answer = client.result(client.submit(JobMsg(task_name=name,
                                                tasks=[msg])),
                           timeout=TIMEOUT)
    assert isinstance(answer, JobReturnMsg) and not answer.ok
    # CoralNet's reading: the last line's class, an admin error.
    assert failures.error_class(answer.error_message) == \
        failures.SOFT_TIME_LIMIT, answer.error_message
    assert not failures.is_user_error(answer.error_message)
    assert 'ran past its soft time limit' in answer.error_message
    assert relabelled not in answer.error_message


def test_a_limit_while_the_report_is_drawn_leaves_the_training_done(
        app, start_worker, tmp_path):
    # The training report (TRAINING_REPORT) is drawn after the classifier
    # and the validation results are stored. A soft limit landing there
    # ends only the report: the task succeeds with its outputs whole, and
    # the worker's log says what stopped the report and what to change.
    from spacer_worker.messages import TrainClassifierMsg, TrainingTaskLabels
    from spacer_worker.storage import load_classifier
    from spacer_worker.train_utils import make_random_data

    np.random.seed(0)
    data = tmp_path / 'data'
    data.mkdir()
    sets = {part: make_random_data(
        count, [1, 2, 3], 20, 16, fs(data),
        [str(data / f'{part}{i}.npz') for i in range(count)])
        for part, count in (('train', 8), ('ref', 3), ('val', 3))}
    msg = TrainClassifierMsg(
        job_token='late-report', trainer='minibatch', nbr_epochs=2,
        clf_type='MLP', labels=TrainingTaskLabels(**sets),
        previous_model_locs=[], model_loc=fs(tmp_path / 'model.pkl'),
        valresult_loc=fs(tmp_path / 'valresult.json'))
    worker = start_worker('late', queues='train', env={
        'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path),
        'SPACER_TRAINING_REPORT': '1',
        'DIST_TEST_SOFT_LIMIT_IN': 'spacer_worker.report:build_report'})
    client = Client(app)
    handle = client.submit(msg)

    answer = client.result(handle, timeout=TIMEOUT)

    assert client.status(handle).state == 'SUCCESS'
    assert answer.acc >= 0 and len(answer.ref_accs) == 2
    assert load_classifier(msg.model_loc).classes_.tolist() == [1, 2, 3]
    assert (tmp_path / 'valresult.json').exists()
    assert not (tmp_path / 'model_report' / 'index.html').exists()
    log = worker.log_text()
    assert 'soft time limit' in log and 'stopped its report' in log
    assert 'could not be written' not in log
