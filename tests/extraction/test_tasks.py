"""extract_features / classify_image: bad images and bad points end in typed
errors; classify_image scores what extraction produces."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from spacer_worker import tasks
from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    DataLimitError,
    ImageDecodeError,
    RowColumnInvalidError,
)
from spacer_worker.extractors.checks import check_extract_inputs
from spacer_worker.messages import ClassifyImageMsg, ExtractFeaturesMsg


def _extract_msg(weights, image_path, rowcols, tmp_path) -> ExtractFeaturesMsg:
    return ExtractFeaturesMsg(
        job_token='job', extractor=weights.extractor(), rowcols=rowcols,
        image_loc=DataLocation('filesystem', str(image_path)),
        feature_loc=DataLocation('filesystem', str(tmp_path / 'out.feats')))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))


def _bomb_png() -> bytes:
    """A PNG whose header claims 100000 x 100000 RGB pixels (30 GB)."""
    header = struct.pack('>IIBBBBB', 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
            + _png_chunk(b'IDAT', zlib.compress(b'\0' * 1000))
            + _png_chunk(b'IEND', b''))


def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), np.uint8)).save(
        out, 'JPEG')
    return out.getvalue()


@pytest.mark.parametrize('name, content, error', [
    ('corrupt.jpg', lambda: _jpeg_bytes()[:200] + b'\x13' * 4000,
     ImageDecodeError),
    ('truncated.jpg', lambda: _jpeg_bytes()[:len(_jpeg_bytes()) // 2],
     ImageDecodeError),
    ('bomb.png', _bomb_png, DataLimitError),
    ('notes.txt', lambda: b'these are field notes, not an image\n' * 20,
     ImageDecodeError),
])
def test_bad_images_end_in_typed_errors(weights, tmp_path, name, content,
                                        error):
    path = tmp_path / name
    path.write_bytes(content())
    msg = _extract_msg(weights, path, [(10, 10)], tmp_path)
    # The worker's body: our typed class (in process, PySpacer's).
    with pytest.raises(error, match=name):
        tasks.images.extract_features(msg)
    assert not (tmp_path / 'out.feats').exists()


@pytest.mark.parametrize('rowcols, match', [
    ([(10, 10), (300, 5)], 'Row value 300 falls outside'),
    ([(10, 400)], 'Column value 400 falls outside'),
    ([(0, 0), (-1, 5)], 'non-negative'),
])
def test_points_outside_the_image_end_in_row_column_errors(
        weights, image_cases, tmp_path, rowcols, match):
    case = next(c for c in image_cases if c.name == 'rgb.jpg')  # 400 x 300
    # (A negative point is refused as early as the message is built.)
    with pytest.raises(RowColumnInvalidError, match=match):
        tasks.extract_features(
            _extract_msg(weights, case.path, rowcols, tmp_path))
    assert not (tmp_path / 'out.feats').exists()


def test_too_many_points_is_a_data_limit_error(weights, image_cases, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv('SPACER_MAX_POINTS_PER_IMAGE', '3')
    case = image_cases[0]
    msg = _extract_msg(weights, case.path, [(1, 1)] * 4, tmp_path)
    with pytest.raises(DataLimitError,
                       match="that's larger than the max allowed of 3"):
        tasks.extract_features(msg)


def test_image_over_the_pixel_limit_is_refused(weights, image_cases, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv('SPACER_MAX_IMAGE_PIXELS', '10000')
    case = image_cases[0]
    msg = _extract_msg(weights, case.path, [(1, 1)], tmp_path)
    with pytest.raises(DataLimitError, match='total pixels, which is larger '
                                             'than the max allowed of 10000'):
        tasks.extract_features(msg)


@pytest.mark.parametrize('rowcols, match', [
    ([(1.5, 2)], 'Row values must be integers'),
    ([(1, '2')], 'Column values must be integers'),
    ([(1, True)], 'Column values must be integers'),
    ([(1, 2, 3)], r'rowcols\[0\].*not a \(row, column\) pair'),
])
def test_non_integer_points_are_refused_by_the_extractor(weights, rowcols,
                                                         match):
    # Extractors called directly (PySpacer's API) check points too.
    with pytest.raises(RowColumnInvalidError, match=match):
        weights.extractor()(Image.new('RGB', (50, 50)), rowcols)
    with pytest.raises(RowColumnInvalidError, match=match):
        check_extract_inputs((50, 50), rowcols)


def _classifier(tmp_path) -> DataLocation:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import SGDClassifier

    from spacer_worker.storage import store_classifier

    rng = np.random.default_rng(0)
    x = rng.random((60, 1280), dtype=np.float32)
    y = np.repeat([3, 7, 11], 20)
    # Trained then calibrated on held-out data, as PySpacer does.
    sgd = SGDClassifier(loss='log_loss', random_state=0).fit(x[::2], y[::2])
    clf = CalibratedClassifierCV(sgd, cv='prefit').fit(x[1::2], y[1::2])
    loc = DataLocation('filesystem', str(tmp_path / 'clf.model'))
    store_classifier(loc, clf)
    return loc


def test_classify_image_scores_the_extracted_features(weights, image_cases,
                                                      tmp_path):
    from spacer_worker.storage import load_classifier

    case = next(c for c in image_cases if c.name == 'rgba.png')
    clf_loc = _classifier(tmp_path)
    msg = ClassifyImageMsg(
        job_token='classify', extractor=weights.extractor(),
        rowcols=case.rowcols,
        image_loc=DataLocation('filesystem', str(case.path)),
        classifier_loc=clf_loc)
    # When the image is classified at its points,
    result = tasks.classify_image(msg)
    # then each point gets the classifier's probabilities for its features,
    # in the message's order.
    features, _ = weights.extractor()(Image.open(case.path), case.rowcols)
    expected = load_classifier(clf_loc).predict_proba(
        features.feature_array().astype(np.float64))
    assert result.classes == [3, 7, 11]
    assert result.valid_rowcol is True
    assert [(r, c) for r, c, _ in result.scores] == case.rowcols
    np.testing.assert_allclose([s for _, _, s in result.scores], expected,
                               atol=1e-6)
    assert result.runtime > 0


def test_classify_image_keeps_its_classifier_but_never_a_stale_one(
        weights, image_cases, tmp_path, monkeypatch):
    from spacer_worker.storage import classifier_cache as model_cache

    model_cache.clear()
    parsed = []
    real_parse = model_cache.parse_classifier

    def counting_parse(data, where):
        parsed.append(where)
        return real_parse(data, where)

    # A spy on the real unpickling, counting how often the cache misses.
    monkeypatch.setattr(model_cache, 'parse_classifier', counting_parse)
    case = next(c for c in image_cases if c.name == 'small.png')
    clf_loc = _classifier(tmp_path)
    msg = ClassifyImageMsg(
        job_token='classify', extractor=weights.extractor(),
        rowcols=case.rowcols[:2],
        image_loc=DataLocation('filesystem', str(case.path)),
        classifier_loc=clf_loc)
    # Given a worker that classified one image with a classifier,
    first = tasks.classify_image(msg)
    # when it classifies again with the same file, it does not unpickle it
    # again,
    assert tasks.classify_image(msg).scores == first.scores
    assert len(parsed) == 1
    # and when the file is replaced, the new classifier is the one used.
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import SGDClassifier

    from spacer_worker.storage import store_classifier
    rng = np.random.default_rng(5)
    x, y = rng.random((60, 1280)), np.repeat([4, 9], 30)
    clf = CalibratedClassifierCV(
        SGDClassifier(loss='log_loss', random_state=0).fit(x, y),
        cv='prefit').fit(x, y)
    store_classifier(clf_loc, clf)
    assert tasks.classify_image(msg).classes == [4, 9]
    assert len(parsed) == 2
    model_cache.clear()
