"""Feature files read with ISA-L give np.load's arrays, and damage is caught."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.exceptions import FeatureFileError
from spacer_worker.storage import npz
from spacer_worker.storage.features import encode_features


def _file(compress: bool) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {'meta': np.array([1, 30, 64]), 'rows': np.arange(30),
              'cols': np.arange(30), 'feat': rng.random((30, 64))}
    out = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize('data', [
    _file(True), _file(False),  # as PySpacer's numpy writes them
    encode_features(ImageFeatures.from_arrays(
        np.arange(5), np.arange(5),
        np.random.default_rng(1).random((5, 1280), dtype=np.float32))),
])
@pytest.mark.parametrize('limit', [1 << 30, 0])  # ISA-L / zipfile's reader
def test_arrays_equal_np_load(data, limit):
    assert npz._inflater is not None, 'isal is a worker dependency'
    with np.load(io.BytesIO(data)) as expected:
        for name in expected.files:
            array = npz.read_member(expected.zip, name, data, limit)
            assert array.dtype == expected[name].dtype
            assert np.array_equal(array, expected[name])


def test_a_flipped_byte_in_the_vectors_is_a_feature_file_error():
    data = bytearray(_file(True))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo('feat.npy')
    # A byte in the middle of the deflated vectors.
    data[info.header_offset + 60 + info.compress_size // 2] ^= 0xFF
    with pytest.raises(FeatureFileError, match='damaged npz'):
        ImageFeatures.from_bytes(bytes(data), 'f.npz')


def test_a_truncated_file_is_a_feature_file_error():
    data = _file(True)
    with pytest.raises(FeatureFileError):
        ImageFeatures.from_bytes(data[:len(data) // 2], 'f.npz')


def test_written_archives_are_zips_numpy_and_zipfile_read_alike():
    # write_archive lays the zip out itself (to deflate with ISA-L): every
    # CRC and size must hold for zipfile, and np.load must give the arrays.
    rng = np.random.default_rng(2)
    arrays = {'meta': np.array([1, 7, 1280]), 'rows': np.arange(7, dtype=np.uint16),
              'feat': rng.random((7, 1280), dtype=np.float32)}
    members = []
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        members.append((name + '.npy', buffer.getvalue()))
    data = npz.write_archive(members)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert [i.filename for i in archive.infolist()] == [m[0] for m in members]
    assert all(i.compress_type == zipfile.ZIP_DEFLATED and
               i.date_time == (1980, 1, 1, 0, 0, 0) for i in archive.infolist())
    with np.load(io.BytesIO(data)) as loaded:
        for name, array in arrays.items():
            assert loaded[name].dtype == array.dtype
            assert np.array_equal(loaded[name], array)
    assert npz.write_archive(members) == data  # reproducible bytes


def test_written_archives_without_isal_are_the_same_format(monkeypatch):
    members = [('feat.npy', bytes(range(200)) * 500)]
    with_isal = npz.write_archive(members)
    monkeypatch.setattr(npz, '_inflater', None)
    with_zlib = npz.write_archive(members)
    for data in (with_isal, with_zlib):
        archive = zipfile.ZipFile(io.BytesIO(data))
        assert archive.read('feat.npy') == members[0][1]
        # A periodic member shrinks: it really is deflated.
        assert archive.getinfo('feat.npy').compress_size < 10_000


def _npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize('order', ['C', 'F'])
def test_the_quick_path_gives_np_loads_arrays(order):
    # One inflate and one header read per member (read_small_arrays): the
    # same arrays as np.load, in either memory order, read-only views.
    rng = np.random.default_rng(2)
    feat = np.asarray(rng.random((40, 24)), order=order)
    data = _npz(meta=np.array([1, 40, 24]), rows=np.arange(40, dtype=np.uint16),
                cols=np.arange(40, dtype=np.uint16), feat=feat)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = {k: k + '.npy' for k in ('meta', 'rows', 'cols', 'feat')}
        arrays = npz.read_small_arrays(archive, data, names, 1 << 30)
    with np.load(io.BytesIO(data)) as expected:
        for key, array in arrays.items():
            assert array.dtype == expected[key].dtype
            assert np.array_equal(array, expected[key])
            assert not array.flags.writeable
    features = ImageFeatures.from_bytes(data, 'f.npz')
    assert np.array_equal(features.feature_array(), feat.astype(np.float32))


def test_a_member_over_the_limit_is_left_to_the_careful_reader():
    data = _npz(meta=np.array([1, 4, 3]), rows=np.arange(4), cols=np.arange(4),
                feat=np.ones((4, 3)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = {k: k + '.npy' for k in ('meta', 'rows', 'cols', 'feat')}
        assert npz.read_small_arrays(archive, data, names, -(1 << 17)) is None


def _with_member(data: bytes, name: str, payload: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename == name
                         else src.read(info))
    return out.getvalue()


def test_a_header_that_disagrees_with_its_data_is_a_damaged_file():
    # A .npy header claiming more (or fewer) values than the member holds.
    data = _npz(meta=np.array([1, 4, 3]), rows=np.arange(4), cols=np.arange(4),
                feat=np.ones((4, 3)))
    member = io.BytesIO()
    np.lib.format.write_array(member, np.ones((4, 3)))
    raw = member.getvalue()
    for cut in (raw[:-8], raw + b'\0' * 8):
        with pytest.raises(FeatureFileError, match='damaged npz'):
            ImageFeatures.from_bytes(_with_member(data, 'feat.npy', cut), 'f.npz')
