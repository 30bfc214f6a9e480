"""Per-epoch checkpoints: an interrupted training resumes after its last
finished epoch and ends with the classifier of an uninterrupted run."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.messages import TrainClassifierMsg
from spacer_worker.storage import load_classifier
from spacer_worker.tasks import train_classifier
from spacer_worker.training import checkpoint

EPOCHS = 6


class Interrupted(Exception):
    """Stands in for the process dying right after an epoch's checkpoint."""


def _msg(split, directory, clf_type='MLP', epochs=EPOCHS):
    directory.mkdir(exist_ok=True)
    return TrainClassifierMsg(
        job_token='job1', trainer='minibatch', nbr_epochs=epochs,
        clf_type=clf_type, labels=split, previous_model_locs=[],
        model_loc=DataLocation('filesystem', str(directory / 'model.pkl')),
        valresult_loc=DataLocation('filesystem', str(directory / 'vr.json')))


def _scores(msg, split):
    clf = load_classifier(msg.model_loc)
    feats = np.concatenate([ImageFeatures.load(loc).feature_array()
                            for loc in split.val.keys()])
    return clf.predict_proba(feats.astype(np.float64))


def _stop_after(epoch):
    seen = []

    def progress(**info):
        seen.append(info['epoch'])
        if info['epoch'] == epoch:
            raise Interrupted
    return progress, seen


def _checkpoints(directory):
    return sorted(p.name for p in directory.iterdir() if 'checkpoint' in p.name)


@pytest.mark.parametrize('clf_type,precision', [
    ('MLP', 'float32'), ('MLP', 'float64'), ('LR', 'float32')])
def test_resumed_training_equals_uninterrupted(split, tmp_path, monkeypatch,
                                               clf_type, precision):
    monkeypatch.setenv('SPACER_TRAINING_PRECISION', precision)
    whole = _msg(split, tmp_path / 'whole', clf_type)
    whole_ret = train_classifier(whole)

    # Given a run of the same training stopped after epoch 3
    cut = _msg(split, tmp_path / 'cut', clf_type)
    progress, _ = _stop_after(3)
    started = time.monotonic()
    with pytest.raises(Interrupted):
        train_classifier(cut, progress=progress)
    first_seconds = time.monotonic() - started
    assert _checkpoints(tmp_path / 'cut')
    assert not (tmp_path / 'cut' / 'model.pkl').exists()

    # When it is run again, it goes on from epoch 4
    progress, seen = _stop_after(None)
    started = time.monotonic()
    cut_ret = train_classifier(cut, progress=progress)
    second_seconds = time.monotonic() - started
    assert seen == [4, 5, 6]

    # Then it ends with the same classifier, and the checkpoint is gone
    assert cut_ret.ref_accs == whole_ret.ref_accs
    assert cut_ret.acc == whole_ret.acc
    # (its runtime counts the epochs the first run saved: part of that run's
    # time, the rest being set-up, which on this tiny set is a large part)
    assert cut_ret.runtime - second_seconds > 0.1 * first_seconds
    assert np.array_equal(_scores(cut, split), _scores(whole, split))
    assert _checkpoints(tmp_path / 'cut') == []
    assert _checkpoints(tmp_path / 'whole') == []


def test_a_checkpoint_of_another_job_is_not_used(split, tmp_path):
    first = _msg(split, tmp_path / 'a')
    progress, _ = _stop_after(3)
    with pytest.raises(Interrupted):
        train_classifier(first, progress=progress)
    [name] = _checkpoints(tmp_path / 'a')

    # The same output path, another job (one more epoch): its own name...
    other = _msg(split, tmp_path / 'a', epochs=EPOCHS + 1)
    other_name = checkpoint.location_for(
        other, checkpoint.job_hash(other)).key.rsplit('/', 1)[1]
    assert other_name != name
    # ...and a file planted under its name is refused by content
    (tmp_path / 'a' / other_name).write_bytes(
        (tmp_path / 'a' / name).read_bytes())
    progress, seen = _stop_after(None)
    train_classifier(other, progress=progress)
    assert seen[0] == 1


def test_an_unreadable_or_hostile_checkpoint_starts_over(split, tmp_path):
    msg = _msg(split, tmp_path / 'x', epochs=2)
    loc = checkpoint.location_for(msg, checkpoint.job_hash(msg))

    class Boom:
        def __reduce__(self):
            return (print, ('pwned',))
    with open(loc.key, 'wb') as f:
        pickle.dump({'format': 1, 'clf': Boom()}, f)
    progress, seen = _stop_after(None)
    train_classifier(msg, progress=progress)
    assert seen == [1, 2]


def test_checkpoint_setting(split, tmp_path, monkeypatch):
    msg = _msg(split, tmp_path / 'm')
    digest = checkpoint.job_hash(msg)
    assert checkpoint.location_for(msg, digest).key.startswith(
        msg.model_loc.key + '.checkpoint-')
    monkeypatch.setenv('SPACER_TRAINING_CHECKPOINT', 'off')
    assert checkpoint.location_for(msg, digest) is None
    monkeypatch.setenv('SPACER_TRAINING_CHECKPOINT', str(tmp_path / 'ck'))
    loc = checkpoint.location_for(msg, digest)
    assert loc.key == f'{tmp_path}/ck/checkpoint-{digest[:32]}.pkl'
    monkeypatch.setenv('SPACER_TRAINING_CHECKPOINT', 's3://bucket/ck')
    loc = checkpoint.location_for(msg, digest)
    assert (loc.storage_type, loc.bucket_name) == ('s3', 'bucket')
    monkeypatch.setenv('SPACER_TRAINING_PRECISION', 'float64')
    assert checkpoint.job_hash(msg) != digest


def test_a_checkpoint_that_cannot_be_written_does_not_fail_training(
        split, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    monkeypatch.setenv('SPACER_TRAINING_CHECKPOINT', str(blocker / 'ck'))
    msg = _msg(split, tmp_path / 'y', epochs=2)
    ret = train_classifier(msg)
    assert len(ret.ref_accs) == 2 and (tmp_path / 'y' / 'model.pkl').exists()
    assert 'Could not write the training checkpoint' in caplog.text


def test_a_permanent_failure_removes_the_checkpoint(split, tmp_path):
    from spacer_worker.exceptions import TrainingLabelsError
    msg = _msg(split, tmp_path / 'p')

    def progress(**info):
        if info['epoch'] == 2:
            assert _checkpoints(tmp_path / 'p')
            raise TrainingLabelsError('bad labels, found late')
    with pytest.raises(TrainingLabelsError):
        train_classifier(msg, progress=progress)
    assert _checkpoints(tmp_path / 'p') == []
