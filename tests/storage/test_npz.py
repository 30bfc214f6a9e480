"""Feature files read with ISA-L give np.load's arrays, and damage is caught."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.exceptions import FeatureFileError
from spacer_worker.storage import npz
from spacer_worker.storage.features import decode_features, encode_features


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
        decode_features(bytes(data), 'f.npz')


def test_a_truncated_file_is_a_feature_file_error():
    data = _file(True)
    with pytest.raises(FeatureFileError):
        decode_features(data[:len(data) // 2], 'f.npz')
