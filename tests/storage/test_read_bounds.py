"""Every reader bounds what it allocates before it allocates it (issue 28).

Each hostile file is small and declares a large allocation: a TIFF tile,
a deflated weights storage, zero-stride tensors, a pickled array of
10^12 zero-size elements, millions of JSON vectors, more points than a
feature file may hold. Each is read in a fresh interpreter
(:func:`cost_of_reading`), which must end in the reader's typed error with
its peak RSS grown by a few MB at most, where the unbounded read cost
hundreds. Then seeded fuzzing: mutated versions of each file give only
typed errors (or a result), never anything else.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from spacer_worker.exceptions import (
    DataLimitError,
    FeatureFileError,
    ImageDecodeError,
    UnsafePickleError,
)
from tests.storage import hostile_files as hostile

# Peak RSS growth (MB) a refused file may cost: headers, small buffers.
BOUNDED_MB = 40

FEATURES = 'spacer_worker.storage.features:decode_features'
IMAGE = 'spacer_worker.storage.images:decode_image'
PICKLE = 'spacer_worker.storage.classifiers:restricted_loads'
WEIGHTS = 'spacer_worker.extractors.runtime.pt_reader:load'


def _npz_with_points(points: int) -> bytes:
    from spacer_worker.data_classes import ImageFeatures
    from spacer_worker.storage.features import encode_features
    return encode_features(ImageFeatures.from_arrays(
        list(range(points)), list(range(points)),
        np.zeros((points, 8), np.float32)))


CASES = {
    # name: (reader, bytes, settings, the typed error)
    'TIFF declaring an 8192 x 8192 tile': (
        IMAGE, hostile.tiff_tile_bomb, {'IMAGE_MAX_DECODED_BYTES': 64 << 20},
        'DataLimitError'),
    'weights storage deflated 1000:1': (
        WEIGHTS, hostile.pt_deflated_storage, {}, 'PtFormatError'),
    'weights of zero-stride tensors': (
        WEIGHTS, hostile.pt_zero_stride_tensors,
        {'WEIGHTS_MAX_TENSOR_BYTES': 32 << 20}, 'PtFormatError'),
    'pickled array of 10^12 zero-size elements': (
        PICKLE, hostile.zero_size_pickle, {}, 'UnsafePickleError'),
    'JSON features of 4 M empty vectors': (
        FEATURES, hostile.json_feature_bomb,
        {'FEATURE_JSON_MAX_BYTES': 1 << 20}, 'ReadLimitError'),
    'npz features of 5000 points': (
        FEATURES, lambda: _npz_with_points(5000),
        {'FEATURE_MAX_POINTS': 1000}, 'ReadLimitError'),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_a_small_hostile_file_fails_typed_at_bounded_memory(name, tmp_path):
    reader, build, settings, error = CASES[name]
    env = {f'SPACER_{k}': str(v) for k, v in settings.items()}
    cost = hostile.cost_of_reading(reader, build(), tmp_path, env)
    assert cost['error'] == error, cost
    assert cost['peak_mb'] < BOUNDED_MB, cost


def test_json_feature_arrays_obey_the_npz_array_bound(monkeypatch):
    from spacer_worker.exceptions import ReadLimitError
    from spacer_worker.storage.features import decode_features

    monkeypatch.setenv('SPACER_FEATURE_ARRAY_MAX_BYTES', str(4 << 20))
    # 200 x 20000 float32 = 16 MB, over 4 MB
    with pytest.raises(ReadLimitError, match='FEATURE_ARRAY_MAX_BYTES'):
        decode_features(hostile.json_wide_features(), 'f.json')


def test_feature_points_are_bounded_in_json_too(monkeypatch):
    from spacer_worker.exceptions import ReadLimitError
    from spacer_worker.storage.features import decode_features

    monkeypatch.setenv('SPACER_FEATURE_MAX_POINTS', '10')
    data = ('[' + ','.join(['[1.0, 2.0]'] * 11) + ']').encode()
    with pytest.raises(ReadLimitError, match='FEATURE_MAX_POINTS'):
        decode_features(data, 'f.json')
    decode_features(('[' + ','.join(['[1.0, 2.0]'] * 10) + ']').encode(),
                    'f.json')


def test_decoded_memory_counts_bit_depth_and_progressive_scans(monkeypatch):
    from PIL import Image

    from spacer_worker.storage.image_memory import decoded_bytes
    from spacer_worker.storage.images import decode_image

    def saved(image, **kw) -> bytes:
        out = io.BytesIO()
        image.save(out, **kw)
        return out.getvalue()

    plain = Image.open(io.BytesIO(saved(Image.new('RGB', (100, 80)),
                                        format='JPEG')))
    progressive = Image.open(io.BytesIO(saved(
        Image.new('RGB', (100, 80)), format='JPEG', progressive=True)))
    wide = Image.open(io.BytesIO(saved(Image.new('F', (100, 80)),
                                       format='TIFF')))
    assert decoded_bytes(plain) == 100 * 80 * 4
    assert decoded_bytes(progressive) == 100 * 80 * 4 + 100 * 80 * 3 * 2
    # 32-bit samples: four bytes a pixel, plus libtiff's strip buffer
    assert decoded_bytes(wide) >= 100 * 80 * 4 * 2
    # and the bound applies before decoding, however few the pixels
    monkeypatch.setenv('SPACER_IMAGE_MAX_DECODED_BYTES', str(100 * 80 * 4))
    decode_image(saved(Image.new('RGB', (100, 80)), format='PNG'))
    with pytest.raises(DataLimitError, match='IMAGE_MAX_DECODED_BYTES'):
        decode_image(saved(Image.new('RGB', (100, 80)), format='JPEG',
                           progressive=True))


def test_a_zero_size_dtype_cannot_hide_an_element_count():
    from spacer_worker.storage.classifiers import restricted_loads
    with pytest.raises(UnsafePickleError, match='PICKLE_ARRAY_MAX_BYTES'):
        restricted_loads(hostile.zero_size_pickle())


# --- fuzz: mutated hostile files give typed errors only -----------------------

def _mutations(data: bytes, seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(min(len(mutated), 4096))
            mutated[at] = rng.randrange(256)
        if rng.random() < 0.2:
            mutated = mutated[:rng.randrange(1, len(mutated))]
        yield bytes(mutated)


def _fuzz(read, data: bytes, typed: tuple, seed: int, count: int = 150):
    for mutated in _mutations(data, seed, count):
        try:
            read(mutated)
        except typed:
            pass


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_fuzzed_image_headers_give_typed_errors(monkeypatch):
    from spacer_worker.storage.images import decode_image
    monkeypatch.setenv('SPACER_IMAGE_MAX_DECODED_BYTES', str(64 << 20))
    small = hostile.tiff_tile_bomb(tile=64, size=64)
    _fuzz(decode_image, small, (DataLimitError, ImageDecodeError), seed=1)


def test_fuzzed_weights_give_typed_errors(monkeypatch):
    from spacer_worker.extractors.runtime.pt_reader import PtFormatError, load
    monkeypatch.setenv('SPACER_WEIGHTS_MAX_TENSOR_BYTES', str(8 << 20))
    _fuzz(load, hostile.pt_zero_stride_tensors(elements=1 << 10),
          (PtFormatError,), seed=2)


def test_fuzzed_pickled_arrays_give_typed_errors():
    from spacer_worker.exceptions import ClassifierLoadError
    from spacer_worker.storage.classifiers import restricted_loads
    _fuzz(restricted_loads, hostile.zero_size_pickle(),
          (ClassifierLoadError,), seed=3)


def test_fuzzed_json_features_give_typed_errors(monkeypatch):
    from spacer_worker.storage.features import decode_features
    monkeypatch.setenv('SPACER_FEATURE_MAX_POINTS', '50')
    data = ('{"point_features": [' + ','.join(
        f'{{"row": {i}, "col": {i}, "data": [0.5, 1.5, 2.5]}}'
        for i in range(60)) + ']}').encode()
    _fuzz(decode_features, data, (FeatureFileError, DataLimitError), seed=4)
