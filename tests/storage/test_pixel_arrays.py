"""Images decoded into arrays, and JPEGs decoded rows on demand: the same
pixels as Pillow's own decoding, and the same typed errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spacer_worker.exceptions import ImageDecodeError
from spacer_worker.storage.images import decode_image
from spacer_worker.storage.pixel_arrays import rgbx_array, row_decoder


def _photo(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((width, height),
                                                      Image.BICUBIC))
    grain = rng.normal(0, 6, smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, image_format: str, mode: str = 'RGB',
             **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, image_format, **options)
    return out.getvalue()


def _pillow(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize('image_format, options', [
    ('JPEG', {'quality': 90}),
    ('JPEG', {'quality': 90, 'progressive': True}),
    ('JPEG', {'quality': 90, 'subsampling': 0}),
    ('PNG', {}),
])
def test_rgb_images_decode_into_an_array_of_pillows_own_pixels(
        image_format, options):
    data = _encoded(_photo(), image_format, **options)
    image = decode_image(data)
    pixels = rgbx_array(image)
    assert pixels is not None and pixels.shape == (480, 640, 4)
    expected = np.asarray(_pillow(data))
    np.testing.assert_array_equal(pixels[..., :3], expected)
    # And the image is an ordinary one for everything else.
    assert image.mode == 'RGB'
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_array_equal(np.asarray(image.crop((5, 7, 105, 57))),
                                  expected[7:57, 5:105])


@pytest.mark.parametrize('mode', ['L', 'CMYK', 'RGBA', 'P'])
def test_other_modes_decode_as_pillow_does_without_an_array(mode):
    image_format = 'PNG' if mode in ('RGBA', 'P') else 'JPEG'
    data = _encoded(_photo(200, 120), image_format, mode)
    image = decode_image(data, rows_on_demand=True)
    assert rgbx_array(image) is None and row_decoder(image) is None
    assert image.mode == mode
    np.testing.assert_array_equal(np.asarray(image),
                                  np.asarray(_pillow(data)))


@pytest.mark.parametrize('progressive', [False, True])
def test_rows_on_demand_come_top_down_and_match_pillow(progressive):
    data = _encoded(_photo(800, 600, seed=1), 'JPEG', quality=92,
                    progressive=progressive)
    expected = np.asarray(_pillow(data))
    image = decode_image(data, rows_on_demand=True)
    decoder = row_decoder(image)
    assert decoder is not None and decoder.rows == 0
    assert rgbx_array(image) is None  # not until every row is decoded
    seen = []
    for wanted in (1, 100, 250, 599, 600):
        decoder.decode_to(wanted)
        assert decoder.rows >= wanted
        seen.append(decoder.rows)
        # Every row it counts is final.
        np.testing.assert_array_equal(decoder.array[:decoder.rows, :, :3],
                                      expected[:decoder.rows])
    assert seen == sorted(seen) and seen[-1] == 600
    assert row_decoder(image) is None
    np.testing.assert_array_equal(rgbx_array(image)[..., :3], expected)
    np.testing.assert_array_equal(np.asarray(image), expected)
    if not progressive:  # a baseline JPEG gives rows before its end
        assert seen[0] < 600


def test_any_pillow_use_of_an_image_left_to_rows_on_demand_decodes_the_rest():
    data = _encoded(_photo(), 'JPEG')
    expected = np.asarray(_pillow(data))
    image = decode_image(data, rows_on_demand=True)
    row_decoder(image).decode_to(50)
    bottom = np.asarray(image.crop((0, 400, 640, 480)))
    np.testing.assert_array_equal(bottom, expected[400:])
    assert row_decoder(image) is None
    np.testing.assert_array_equal(rgbx_array(image)[..., :3], expected)


def test_a_truncated_jpeg_fails_typed_where_its_rows_run_out():
    data = _encoded(_photo(), 'JPEG')
    truncated = data[:len(data) // 2]
    image = decode_image(truncated, 'image at truncated.jpg',
                         rows_on_demand=True)
    decoder = row_decoder(image)
    decoder.decode_to(10)  # the top rows are there
    with pytest.raises(ImageDecodeError,
                       match=r'truncated\.jpg \(JPEG 640 x 480\) is corrupt '
                             r'or truncated: .*rows decoded'):
        decoder.finish()
    # Left unloaded, as Pillow leaves it: a later use fails again, typed
    # by Pillow, rather than handing out a half-decoded image.
    assert row_decoder(image) is None and rgbx_array(image) is None
    with pytest.raises(OSError):
        image.load()
    # Decoded whole it fails the same way, before any use.
    with pytest.raises(ImageDecodeError, match='corrupt or truncated'):
        decode_image(truncated, 'image at truncated.jpg')


def test_an_image_left_to_rows_on_demand_is_freed_without_the_collector():
    import gc
    import weakref

    data = _encoded(_photo(), 'JPEG')
    gc.disable()
    try:
        image = decode_image(data, rows_on_demand=True)
        row_decoder(image).decode_to(10)
        gone = weakref.ref(image)
        del image
        assert gone() is None  # no reference cycle holds its pixels
    finally:
        gc.enable()


@pytest.mark.parametrize('chunk', [1, 7, 1000])
def test_rows_on_demand_end_at_the_decoders_end_in_any_chunking(
        monkeypatch, chunk):
    # Fed a few bytes at a time, the last row is written before the end
    # marker arrives: the image must still end loaded, not half-finished.
    from spacer_worker.storage import pixel_arrays

    monkeypatch.setattr(pixel_arrays, '_CHUNK', chunk)
    data = _encoded(_photo(96, 64, seed=3), 'JPEG')
    expected = np.asarray(_pillow(data))
    image = decode_image(data, rows_on_demand=True)
    decoder = row_decoder(image)
    decoder.decode_to(64)
    assert decoder.done and row_decoder(image) is None
    np.testing.assert_array_equal(np.asarray(image), expected)
    image = decode_image(data, rows_on_demand=True)
    np.testing.assert_array_equal(np.asarray(image.crop((0, 0, 96, 64))),
                                  expected)
    # Cut just before the end marker: truncated, as Pillow says too.
    cut = decode_image(data[:-2], rows_on_demand=True)
    with pytest.raises(ImageDecodeError, match='truncated'):
        row_decoder(cut).finish()
    with pytest.raises(ImageDecodeError):
        decode_image(data[:-2])
