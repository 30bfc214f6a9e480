"""Patches cut from images decoded into arrays (and rows on demand): the
same pixels as Pillow's crops, the same features bit for bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spacer_worker.extractors.runtime import engine
from spacer_worker.extractors.runtime.patches import (
    crop_patch,
    cut_rgbx,
    iter_rgbx_batches,
    rows_needed,
)
from spacer_worker.storage.images import decode_image
from spacer_worker.storage.pixel_arrays import rgbx_array, row_decoder


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    image = synthetic_texture(np.random.default_rng(seed), 256).resize(
        (width, height))
    out = io.BytesIO()
    image.save(out, 'JPEG', quality=90)
    return out.getvalue()


def _plain(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _points(width: int, height: int, count: int, seed: int
            ) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    corners = [(0, 0), (height - 1, width - 1), (0, width - 1),
               (height - 1, 0), (height // 2, 0), (0, width // 2)]
    return corners + [(int(r), int(c)) for r, c in zip(
        rng.integers(0, height, count), rng.integers(0, width, count),
        strict=True)]


@pytest.mark.parametrize('width, height', [(700, 500), (150, 100), (1, 1),
                                           (224, 3)])
def test_array_cuts_are_pillows_crops_with_a_padding_byte(width, height):
    # Inside, across edges and corners, and images smaller than a patch
    # (mirrored more than once).
    data = _jpeg(width, height)
    pixels = rgbx_array(decode_image(data))
    plain = _plain(data)
    out = np.empty((224, 224, 4), np.uint8)
    for row, col in _points(width, height, 20, seed=1):
        cut_rgbx(pixels, row, col, out)
        np.testing.assert_array_equal(out[..., :3],
                                      crop_patch(plain, row, col))


def test_rows_needed_covers_every_row_a_patch_reads():
    height = 500
    for row in (0, 5, 111, 112, 250, 387, 388, 450, 499):
        needed = rows_needed(row, height)
        # Rows below what it says may be garbage: the patch is unchanged.
        data = _jpeg(300, height, seed=2)
        pixels = rgbx_array(decode_image(data)).copy()
        expected = np.empty((224, 224, 4), np.uint8)
        cut_rgbx(pixels, row, 150, expected)
        pixels[needed:] = 7
        got = np.empty_like(expected)
        cut_rgbx(pixels, row, 150, got)
        np.testing.assert_array_equal(got, expected)
        if needed > 1:  # and the last row it names is read
            pixels[needed - 1] = 9
            cut_rgbx(pixels, row, 150, got)
            assert not np.array_equal(got, expected)


def test_array_batches_come_top_rows_first_and_reuse_their_buffers():
    data = _jpeg(600, 900)
    pixels = rgbx_array(decode_image(data))
    points = _points(600, 900, 30, seed=3)
    asked = []
    batches = iter_rgbx_batches(pixels, points, 4, buffers=3,
                                decode_to=asked.append)
    seen, buffers = [], set()
    for indices, batch in batches:
        assert batch.shape[1:] == (224, 224, 4) and len(batch) <= 4
        buffers.add(batch.base.ctypes.data if batch.base is not None
                    else batch.ctypes.data)
        needs = [rows_needed(points[i][0], 900) for i in indices]
        assert asked[-1] == max(needs)  # decoded that far before cutting
        seen.extend(int(i) for i in indices)
    assert sorted(seen) == list(range(len(points)))
    assert asked == sorted(asked) and asked[-1] == 900  # then the rest
    assert len(buffers) == 3


def test_features_are_the_same_bit_for_bit_however_the_image_is_decoded(
        weights, backend):
    # Pillow's crops in message order; an array; rows on demand, patches
    # in row order: every point's features identical with ONNX Runtime,
    # whose kernels work patch by patch. PyTorch's round differently in
    # other batch company (~1e-6), as they do for a changed batch size.
    data = _jpeg(900, 700, seed=4)
    points = _points(900, 700, 40, seed=5)
    extractor = weights.extractor()
    plain, _ = extractor(_plain(data), points)
    in_array, _ = extractor(decode_image(data), points)
    on_demand = decode_image(data, rows_on_demand=True)
    assert row_decoder(on_demand) is not None
    by_rows, _ = extractor(on_demand, points)
    assert row_decoder(on_demand) is None  # decoded to the end
    expected = plain.feature_array()
    assert 0.05 < np.abs(expected).mean() < 10
    for other in (in_array, by_rows):
        if backend == 'onnxruntime':
            np.testing.assert_array_equal(other.feature_array(), expected)
        else:
            np.testing.assert_allclose(other.feature_array(), expected,
                                       rtol=0, atol=1e-5)
    assert [(p.row, p.col) for p in by_rows.point_features] == points


def test_a_shuffled_point_list_gives_the_same_features_per_point(weights):
    data = _jpeg(800, 600, seed=6)
    points = _points(800, 600, 30, seed=7)
    network, _ = engine.get_network(weights.extractor())
    features = network.extract(decode_image(data, rows_on_demand=True),
                               points)
    order = np.random.default_rng(8).permutation(len(points))
    shuffled = network.extract(decode_image(data, rows_on_demand=True),
                               [points[i] for i in order])
    np.testing.assert_array_equal(shuffled, features[order])
