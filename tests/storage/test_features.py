"""Feature files: PySpacer's npz layout, the precision given, legacy JSON."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures, PointFeatures
from spacer_worker.exceptions import FeatureFileError
from spacer_worker.storage.features import encode_features


def example(n=5, dim=4, rows=None) -> ImageFeatures:
    rng = np.random.default_rng(0)
    rows = list(range(10, 10 + n)) if rows is None else rows
    return ImageFeatures.from_arrays(
        rows, [r + 1 for r in rows],
        rng.standard_normal((n, dim)).astype(np.float32))


def test_round_trip_keeps_points_and_exact_values(tmp_path):
    features = example()
    loc = DataLocation('filesystem', str(tmp_path / 'img.featurevector'))
    features.store(loc)
    loaded = ImageFeatures.load(loc)
    assert loaded.valid_rowcol and loaded.npoints == 5
    assert loaded.feature_dim == 4
    assert list(loaded.rows) == list(range(10, 15))
    assert list(loaded.cols) == list(range(11, 16))
    assert loaded.feature_array().dtype == np.float32
    assert np.array_equal(loaded.feature_array(), features.feature_array())


def test_file_uses_pyspacers_layout_with_float32_values():
    with np.load(io.BytesIO(encode_features(example()))) as npz:
        assert sorted(npz.files) == ['cols', 'feat', 'meta', 'rows']
        assert npz['meta'].tolist() == [1, 5, 4]
        assert npz['meta'].dtype == np.int64
        assert npz['rows'].dtype == np.uint16
        assert npz['feat'].dtype == np.float32
        assert npz['feat'].shape == (5, 4)


def test_bytes_are_reproducible_and_pinned():
    features = ImageFeatures.from_arrays(
        [1, 2], [3, 4], np.array([[0.5, -1.0], [2.0, 0.25]], np.float32))
    first = encode_features(features)
    assert encode_features(features) == first
    # The archive members pinned byte for byte (the deflate stream around
    # them may differ between zlib builds). Change deliberately, if ever.
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        for info in zf.infolist():
            digest.update(info.filename.encode() + b'\0' + zf.read(info))
    assert digest.hexdigest() == PINNED_MEMBERS_SHA256


PINNED_MEMBERS_SHA256 = (
    '012dc6c83f26f0b7a775d28d8d14da60139d5090951bf1c6c84bad60187ef674')


def test_positions_beyond_uint16_are_kept():
    features = example(n=3, rows=[0, 65535, 70000])
    loaded = ImageFeatures.from_bytes(encode_features(features))
    assert list(loaded.rows) == [0, 65535, 70000]


def test_legacy_npz_without_positions_loads():
    features = ImageFeatures.from_arrays(
        [], [], np.ones((3, 2), np.float32), valid_rowcol=False)
    loaded = ImageFeatures.from_bytes(encode_features(features))
    assert not loaded.valid_rowcol and loaded.npoints == 3
    assert np.array_equal(loaded.feature_array(), np.ones((3, 2)))


def test_legacy_json_list_of_vectors_loads(tmp_path):
    path = tmp_path / 'old.json'
    path.write_text(json.dumps([[1.5, 2.0, 3.0], [4.0, 5.0, 6.25]]))
    loaded = ImageFeatures.load(DataLocation('filesystem', str(path)))
    assert not loaded.valid_rowcol
    assert loaded.npoints == 2 and loaded.feature_dim == 3
    assert loaded.feature_array().tolist() == [[1.5, 2.0, 3.0],
                                               [4.0, 5.0, 6.25]]


def test_pyspacer_json_dict_form_loads():
    data = json.dumps({
        'point_features': [{'row': 3, 'col': 4, 'data': [0.5, 1.0]},
                           {'row': 7, 'col': 8, 'data': [1.5, 2.0]}],
        'valid_rowcol': True, 'feature_dim': 2, 'npoints': 2}).encode()
    loaded = ImageFeatures.from_bytes(data)
    assert loaded.valid_rowcol
    assert list(loaded.rows) == [3, 7] and list(loaded.cols) == [4, 8]
    assert loaded.feature_array().tolist() == [[0.5, 1.0], [1.5, 2.0]]


def _npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


GOOD = dict(meta=np.array([1, 2, 2]), rows=np.array([1, 2], np.uint16),
            cols=np.array([1, 2], np.uint16), feat=np.ones((2, 2)))


@pytest.mark.parametrize('data, message', [
    (b'', 'not a feature file'),
    (b'\x00\x01garbage', 'not a feature file'),
    (b'\x93NUMPY\x01\x00', 'not a feature file'),
    (b'PK\x03\x04 truncated zip', 'damaged npz'),
    (_npz(meta=np.array([1, 2, 2]), feat=np.ones((2, 2))),
     'without the rows, cols'),
    (_npz(**{**GOOD, 'feat': np.ones((3, 2))}), "'feat' must be"),
    (_npz(**{**GOOD, 'meta': np.array([1, 2])}), "'meta' must hold"),
    (_npz(**{**GOOD, 'rows': np.array([1.0, 2.0])}), "'rows' must be"),
    (_npz(**{**GOOD, 'cols': np.array([1], np.uint16)}), "'cols' must be"),
    (_npz(**{**GOOD, 'meta': np.array([1, 0, 2]),
             'feat': np.ones((0, 2))}), 'no points'),
    (b'[]', 'no feature vectors'),
    (b'[[1, 2], [3]]', 'equal-length'),
    (b'[["a", "b"]]', 'equal-length'),
    (b'{"x": 1}', "needs 'point_features'"),
    (b'{"point_features": [{"row": 1.5, "col": 1, "data": [1]}]}',
     "integer 'row'"),
    (b'[1, 2', 'not valid JSON'),
    # Broken weights' features: refused with the file named, not left to
    # scikit-learn's "Input X contains NaN" in a training or a scoring.
    (_npz(**{**GOOD, 'feat': np.array([[1.0, 1.0], [np.nan, 1.0]])}),
     r'1 of 2 feature vector\(s\) hold NaN or infinite values \(first: '
     r'vector 1\)'),
    (b'[[1, Infinity], [2, 3]]', r'1 of 2 .*NaN or infinite'),
])
def test_malformed_files_raise_feature_file_error(data, message):
    with pytest.raises(FeatureFileError, match=message):
        ImageFeatures.from_bytes(data, 'f.npz')


def test_object_arrays_are_refused_not_unpickled():
    # allow_pickle stays off: an object array in an npz is not executed.
    data = _npz(**{**GOOD, 'feat': np.array([[object()]], dtype=object)})
    with pytest.raises(FeatureFileError, match='damaged npz'):
        ImageFeatures.from_bytes(data, 'f.npz')


def test_error_names_the_location(tmp_path):
    path = tmp_path / 'bad.npz'
    path.write_bytes(b'nonsense')
    with pytest.raises(FeatureFileError, match='bad.npz'):
        ImageFeatures.read(DataLocation('filesystem', str(path)))


def test_load_raises_what_pyspacer_raises_with_our_detail(tmp_path):
    """CoralNet's feature inspection catches exactly AssertionError and
    FileNotFoundError from ImageFeatures.load, and stores repr(err)."""
    bad = tmp_path / 'bad.npz'
    bad.write_bytes(b'nonsense')
    with pytest.raises(AssertionError, match='bad.npz') as damaged:
        ImageFeatures.load(DataLocation('filesystem', str(bad)))
    assert type(damaged.value) is AssertionError
    assert repr(damaged.value).startswith('AssertionError(')

    with pytest.raises(FileNotFoundError, match='gone.npz') as missing:
        ImageFeatures.load(DataLocation('filesystem', str(tmp_path / 'gone.npz')))
    assert type(missing.value) is FileNotFoundError
    assert repr(missing.value).startswith('FileNotFoundError(')


def test_written_zip_members_have_fixed_timestamps():
    with zipfile.ZipFile(io.BytesIO(encode_features(example()))) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_pyspacer_style_vectors_reload_exactly_as_float64(tmp_path):
    # PySpacer's callers build point features from Python floats and
    # compare what loads back with ==: a float32 file would change 1.1.
    features = ImageFeatures(
        point_features=[PointFeatures(100, 100, [1.1, 1.2, 1.3]),
                        PointFeatures(200, 200, [2.1, 2.2, 2.3])],
        valid_rowcol=True, feature_dim=3, npoints=2)
    loc = DataLocation('filesystem', str(tmp_path / 'img.featurevector'))
    features.store(loc)
    with np.load(loc.key) as npz:
        assert npz['feat'].dtype == np.float64
    loaded = ImageFeatures.load(loc)
    assert loaded.point_features[0].data.tolist() == [1.1, 1.2, 1.3]
    assert loaded[(200, 200)].tolist() == [2.1, 2.2, 2.3]
    # Training and scoring still get one float32 matrix.
    assert loaded.feature_array().dtype == np.float32


def test_legacy_json_vectors_keep_their_precision():
    loaded = ImageFeatures.from_bytes(json.dumps([[1.1, 2.2]]).encode())
    assert loaded.point_features[0].data.tolist() == [1.1, 2.2]
