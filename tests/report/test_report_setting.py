"""TRAINING_REPORT: a training writes its report beside the classifier."""

from __future__ import annotations

import json

import pytest

from spacer_worker.data_classes import DataLocation, ValResults
from spacer_worker.messages import TrainClassifierMsg
from spacer_worker.report import report_folder_for
from spacer_worker.storage import load_bytes
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.tasks import train_classifier
from tests.builders import random_labels


@pytest.fixture
def split(tmp_path):
    (tmp_path / 'features').mkdir()
    return preprocess_labels(random_labels(tmp_path / 'features', im_count=12,
                                           points=20),
                             split_mode=SplitMode.POINTS)


def _train(split, model: DataLocation, valresult: DataLocation):
    return train_classifier(TrainClassifierMsg(
        job_token='job-report', trainer='minibatch', nbr_epochs=3,
        clf_type='MLP', labels=split, previous_model_locs=[],
        model_loc=model, valresult_loc=valresult))


def test_the_report_is_written_beside_the_classifier(split, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_REPORT', 'true')
    model = DataLocation('filesystem', str(tmp_path / 'model.pkl'))

    ret = _train(split, model,
                 DataLocation('filesystem', str(tmp_path / 'vr.json')))

    folder = tmp_path / 'model_report'
    assert {p.name for p in folder.iterdir()} == {
        'index.html', 'report.json', 'confusion_counts.png',
        'confusion_normalised.png', 'per_class.png', 'threshold.png',
        'ref_accs.png'}
    numbers = json.loads((folder / 'report.json').read_text())
    val = ValResults.deserialize(json.loads((tmp_path / 'vr.json').read_text()))
    assert numbers['count'] == len(val.gt)
    assert numbers['ref_accs'] == pytest.approx(ret.ref_accs)
    assert numbers['new_acc'] == pytest.approx(ret.acc)


def test_on_other_storages_too(split, tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_REPORT', '1')
    model = DataLocation('memory', 'reports-test/clf.model')

    _train(split, model, DataLocation('memory', 'reports-test/vr.json'))

    folder = report_folder_for(model)
    assert folder.key == 'reports-test/clf_report'
    page = load_bytes(DataLocation('memory', folder.key + '/index.html'))
    assert b'confusion_counts.png' in page
    assert load_bytes(DataLocation(
        'memory', folder.key + '/threshold.png')).startswith(b'\x89PNG')


def test_off_by_default(split, tmp_path):
    _train(split, DataLocation('filesystem', str(tmp_path / 'model.pkl')),
           DataLocation('filesystem', str(tmp_path / 'vr.json')))

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'features', 'model.pkl', 'vr.json']


@pytest.mark.parametrize('key, folder', [
    ('model/classifier.pkl', 'model/classifier_report'),
    ('my_model_id.model', 'my_model_id_report'),
    ('a.b/noext', 'a.b/noext_report'),
    ('dir/.hidden', 'dir/.hidden_report'),
])
def test_report_folder_names(key, folder):
    assert report_folder_for(DataLocation('s3', key, 'bucket')).key == folder


def test_label_names_as_a_mapping_or_coralnet_list(tmp_path):
    from spacer_worker.exceptions import MessageError
    from spacer_worker.report import load_label_names

    (tmp_path / 'map.json').write_text('{"1": "sand", "22": "coral"}')
    (tmp_path / 'list.json').write_text(
        '[{"id": 1, "name": "sand"}, {"id": 22, "name": "coral"}]')
    (tmp_path / 'bad.json').write_text('[1, 2]')

    expected = {'1': 'sand', '22': 'coral'}
    assert load_label_names(tmp_path / 'map.json') == expected
    assert load_label_names(tmp_path / 'list.json') == expected
    with pytest.raises(MessageError, match='label id -> name'):
        load_label_names(tmp_path / 'bad.json')
    with pytest.raises(MessageError, match='Cannot read'):
        load_label_names(tmp_path / 'missing.json')


def test_a_soft_time_limit_in_the_report_leaves_the_training_done(
        split, tmp_path, monkeypatch, caplog):
    # Celery's soft time limit is SIGUSR1, raised by billiard's handler as
    # SoftTimeLimitExceeded wherever the process is; here it lands while
    # the report is being drawn, after the classifier is stored.
    import os
    import signal

    from billiard.exceptions import SoftTimeLimitExceeded

    import spacer_worker.report as report

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, soft_limit)
    draw = report.build_report

    def drawn_then_stopped(*args, **kwargs):
        built = draw(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR1)
        return built

    monkeypatch.setattr(report, 'build_report', drawn_then_stopped)
    monkeypatch.setenv('SPACER_TRAINING_REPORT', 'true')
    model = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    try:
        ret = _train(split, model,
                     DataLocation('filesystem', str(tmp_path / 'vr.json')))
    finally:
        signal.signal(signal.SIGUSR1, previous)

    # The training's results are whole and the task succeeds,
    assert ret.acc > 0 and (tmp_path / 'model.pkl').stat().st_size > 0
    assert (tmp_path / 'vr.json').exists()
    assert not (tmp_path / 'model_report' / 'index.html').exists()
    # and the log says what stopped the report and what to change.
    text = caplog.text
    assert 'soft time limit' in text and 'TRAIN_TIME_LIMIT' in text
    assert 'could not be written' not in text
