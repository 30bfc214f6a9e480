"""Failures read as CoralNet reads them: the last line of error_message
carries PySpacer's class path, the same one PySpacer 0.14.0 gives for the
same job.

Given one JobMsg per kind of bad input (run once here and once in the
PySpacer reference venv), when each side runs it with ``process_job``, then
the class on the last line is the expected PySpacer class on both sides,
and our own error class stays in the text above it.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from spacer_worker import exceptions
from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import failures
from spacer_worker.messages import JobMsg, JobReturnMsg, TrainClassifierMsg
from spacer_worker.tasks import process_job
from tests.client.helpers import extract_msg, write_image
from tests.reference import run_reference

EXPECTED = {
    'too_many_points': 'spacer.exceptions.DataLimitError',
    'row_out_of_image': 'spacer.exceptions.RowColumnInvalidError',
    'not_an_image': 'PIL.UnidentifiedImageError',
    'missing_file': 'FileNotFoundError',
    'url_not_found': 'spacer.exceptions.URLDownloadError',
    'stale_features': 'spacer.exceptions.RowColumnMismatchError',
    'nan_features_training': 'ValueError',
    'nan_features_scoring': 'ValueError',
}

SKLEARN_TWO_LINE = {
    'nan_features_training': 'ValueError: Input X contains NaN',
    'nan_features_scoring': 'ValueError: Input X contains NaN',
}


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over an empty folder: every URL is a 404."""
    root = tmp_path / 'www'
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def _extract_job(image: Path | str, out: Path, rowcols, storage='filesystem'):
    msg = extract_msg(Path(image), out, rowcols=rowcols)
    if storage != 'filesystem':
        msg.image_loc = DataLocation(storage, str(image))
    return JobMsg(task_name='extract_features', tasks=[msg])


def _stale_training_job(tmp_path: Path) -> JobMsg:
    from spacer_worker.task_utils import SplitMode, preprocess_labels
    from tests.builders import random_labels

    feature_dir = tmp_path / 'features'
    feature_dir.mkdir()
    split = preprocess_labels(random_labels(feature_dir, im_count=10,
                                            points=20),
                              split_mode=SplitMode.POINTS)
    loc = next(iter(split.train.keys()))
    # A point the features were never extracted at: features are stale.
    split.train.add_image(loc, split.train[loc] + [(999, 999, 1)])
    return JobMsg(task_name='train_classifier', tasks=[TrainClassifierMsg(
        job_token='stale', trainer='minibatch', nbr_epochs=1, clf_type='LR',
        labels=split, previous_model_locs=[],
        model_loc=DataLocation('filesystem', str(tmp_path / 'model.pkl')),
        valresult_loc=DataLocation('filesystem', str(tmp_path / 'vr.json')))])


def _nan_feature_jobs(tmp_path: Path) -> dict[str, JobMsg]:
    """A training and a scoring whose feature file holds a NaN (PySpacer:
    scikit-learn's ValueError; ours names the file, under the same class)."""

    from spacer_worker.messages import ClassifyFeaturesMsg
    from spacer_worker.task_utils import SplitMode, preprocess_labels
    from tests.builders import random_labels, store_non_finite

    feature_dir = tmp_path / 'nan-features'
    feature_dir.mkdir()
    split = preprocess_labels(random_labels(feature_dir, im_count=10,
                                            points=20),
                              split_mode=SplitMode.POINTS)

    def training(name: str) -> TrainClassifierMsg:
        return TrainClassifierMsg(
            job_token=name, trainer='minibatch', nbr_epochs=1, clf_type='LR',
            labels=split, previous_model_locs=[],
            model_loc=DataLocation('filesystem', str(tmp_path / f'{name}.pkl')),
            valresult_loc=DataLocation('filesystem',
                                       str(tmp_path / f'{name}.json')))
    assert process_job(JobMsg(task_name='train_classifier',
                              tasks=[training('good')])).ok
    loc = next(iter(split.train.keys()))
    store_non_finite(loc, slice(None), 0)
    return {
        'nan_features_training': JobMsg(task_name='train_classifier',
                                        tasks=[training('nan')]),
        'nan_features_scoring': JobMsg(
            task_name='classify_features', tasks=[ClassifyFeaturesMsg(
                job_token='nan', feature_loc=loc,
                classifier_loc=DataLocation('filesystem',
                                            str(tmp_path / 'good.pkl')))]),
    }


def failing_jobs(tmp_path: Path, http_root: str) -> dict[str, JobMsg]:
    image = write_image(tmp_path / 'img.png')          # 64 x 48
    junk = tmp_path / 'notes.png'
    junk.write_text('these are field notes, not pixels\n')
    out = tmp_path / 'out.featurevector'
    return {
        'too_many_points': _extract_job(image, out, [(1, 1)] * 1001),
        'row_out_of_image': _extract_job(image, out, [(48, 3)]),
        'not_an_image': _extract_job(junk, out, [(1, 1)]),
        'missing_file': _extract_job(tmp_path / 'gone.png', out, [(1, 1)]),
        'url_not_found': _extract_job(f'{http_root}/gone.jpg', out, [(1, 1)],
                                      storage='url'),
        'stale_features': _stale_training_job(tmp_path),
        **_nan_feature_jobs(tmp_path),
    }


def test_our_failures_end_in_pyspacer_class_paths(tmp_path, http_root):
    for name, job in failing_jobs(tmp_path, http_root).items():
        returned = process_job(job)
        assert not returned.ok, name
        assert failures.error_class(returned.error_message) == \
            EXPECTED[name], (name, returned.error_message)
        # Our own class is still there, as the cause.
        assert 'spacer_worker.exceptions.' in returned.error_message or \
            name == 'not_an_image', returned.error_message


@pytest.mark.reference
def test_pyspacer_gives_the_same_classes(pyspacer_reference, tmp_path,
                                         http_root):
    jobs = failing_jobs(tmp_path, http_root)
    theirs = run_reference('''
from spacer.messages import JobMsg
from spacer.tasks import process_job
RESULT = {name: process_job(JobMsg.deserialize(job)).error_message
          for name, job in PAYLOAD.items()}
''', {name: job.serialize() for name, job in jobs.items()})
    ours = {name: process_job(JobMsg.deserialize(job.serialize()))
            for name, job in jobs.items()}
    for name in jobs:
        if name in SKLEARN_TWO_LINE:
            # scikit-learn's message has a second line, which becomes
            # PySpacer's last line ("SGDClassifier does not accept missing
            # values encoded as NaN natively. ..."): no class path to match.
            # Its error is a ValueError; ours is sorted as one.
            assert SKLEARN_TWO_LINE[name] in theirs[name], theirs[name]
        else:
            assert failures.error_class(theirs[name]) == EXPECTED[name], \
                (name, theirs[name])
        assert failures.error_class(ours[name].error_message) == \
            EXPECTED[name], (name, ours[name].error_message)
        assert isinstance(ours[name], JobReturnMsg)


def test_every_error_class_names_a_class_pyspacer_can_raise():
    pyspacer_exceptions = {
        'ConfigError', 'DataLimitError', 'HashMismatchError',
        'RowColumnInvalidError', 'RowColumnMismatchError',
        'RowColumnMissingError', 'TrainingLabelsError', 'URLDownloadError'}
    for value in vars(exceptions).values():
        if not (isinstance(value, type) and
                issubclass(value, exceptions.SpacerError)):
            continue
        path = value.wire_class
        module, _, name = path.rpartition('.')
        if module == 'spacer.exceptions':
            assert name in pyspacer_exceptions, value
        elif value not in (exceptions.ResultLostError,
                           exceptions.RecordError):
            # Those two are the client's own: no PySpacer class fits.
            assert module in ('', 'PIL', '_pickle'), value
            assert failures.printed_class(failures.wire_type(path)) == path


def test_a_new_subclass_inherits_its_parents_pyspacer_class():
    class HostNotAllowedError(exceptions.URLDownloadError,
                              exceptions.PermanentError):
        pass

    text = failures.failure_text(HostNotAllowedError('host x not allowed'))
    assert failures.last_line(text) == \
        'spacer.exceptions.URLDownloadError: host x not allowed'
    assert failures.is_user_error(text)


def test_pyspacer_style_url_download_error():
    cause = TimeoutError('timed out')
    error = exceptions.URLDownloadError("Failed to download 'u'.", cause)
    assert error.original_error is cause
    assert str(error) == "Failed to download 'u'. / Details - TimeoutError: " \
                         "timed out"
