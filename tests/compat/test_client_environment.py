"""What CoralNet's web process does with spacer_worker, in CoralNet's
environment (run on Python 3.10 with Django 4.2, redis-py 4.5.x and numpy
2.2 by test_python310_client.py; on our own Python too).

It builds messages, submits a job through CeleryQueue to a real worker and
collects it, and runs classify_features / preprocess_labels itself, as
CoralNet's web process does.
"""

from __future__ import annotations

import sys
import time

from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels
from spacer_worker.messages import JobMsg, JobReturnMsg, TrainClassifierMsg
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.tasks import classify_features, train_classifier
from tests.client.helpers import extract_job, write_image


def test_environment_is_what_the_test_was_run_for():
    import numpy
    import redis
    print(f'python {sys.version.split()[0]}, redis-py {redis.__version__}, '
          f'numpy {numpy.__version__}')
    assert sys.version_info >= (3, 10)


def test_submit_and_collect_through_celery_queue(app, start_worker,
                                                 tmp_path):
    start_worker('cn-env', queues='extract', env={
        'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path)})
    queue = CeleryQueue(app)
    image = write_image(tmp_path / 'img.png')
    queue.submit_job(extract_job([image], tmp_path, token='7'), 7, None)
    deadline = time.monotonic() + 60
    results: list[JobReturnMsg] = []
    while not results:
        assert time.monotonic() < deadline, 'job not collected in 60 s'
        results, _ = queue.collect_jobs(queue.get_collectable_jobs())
        time.sleep(0.2)
    assert results[0].ok, results[0].error_message
    features = ImageFeatures.load(results[0].original_job.tasks[0].feature_loc)
    assert features.npoints == 2


def test_web_process_trains_and_classifies_features_itself(tmp_path):
    from spacer_worker.messages import ClassifyFeaturesMsg
    from spacer_worker.train_utils import make_random_data

    labels: ImageLabels = make_random_data(
        8, [1, 2], 20, 16, DataLocation('filesystem', str(tmp_path)),
        feature_loc_keys=[str(tmp_path / f'img{i}.npz') for i in range(8)])
    split = preprocess_labels(labels, split_mode=SplitMode.POINTS)
    model = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    train_classifier(TrainClassifierMsg(
        job_token='t', trainer='minibatch', nbr_epochs=2, clf_type='LR',
        labels=split, previous_model_locs=[], model_loc=model,
        valresult_loc=DataLocation('filesystem', str(tmp_path / 'vr.json'))))
    feature_loc = next(iter(split.val.keys()))
    scores = classify_features(ClassifyFeaturesMsg(
        job_token='c', feature_loc=feature_loc, classifier_loc=model))
    assert scores.classes == [1, 2] and len(scores.scores) == 20
    assert isinstance(JobMsg.deserialize(JobMsg(
        task_name='classify_features', tasks=[ClassifyFeaturesMsg(
            job_token='c', feature_loc=feature_loc,
            classifier_loc=model)]).serialize()), JobMsg)
