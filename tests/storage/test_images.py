"""Images: size checked from the header before decoding, decode errors
typed, pixel modes kept."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import DataLimitError, ImageDecodeError
from spacer_worker.storage import (
    default_memory_storage,
    load_image,
    open_image,
    store_bytes,
    store_image,
)
from spacer_worker.storage.images import decode_image


def png(width: int, height: int, with_pixels: bool = True) -> bytes:
    """A grayscale PNG; without pixels it is a header and nothing else."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body)))
    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    out = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
    if with_pixels:
        compressor = zlib.compressobj(9)
        row = b'\x00' * (width + 1)
        idat = b''.join(compressor.compress(row) for _ in range(height))
        out += chunk(b'IDAT', idat + compressor.flush())
    return out + chunk(b'IEND', b'')


def at(key: str, data: bytes) -> DataLocation:
    loc = DataLocation('memory', key)
    store_bytes(loc, data)
    return loc


@pytest.fixture(autouse=True)
def _clean_memory():
    yield
    default_memory_storage().clear()


def test_decompression_bomb_is_refused_from_its_header():
    # 12000 x 12000 = 144 M pixels (over the default 100 M) in ~150 kB.
    bomb = png(12000, 12000)
    assert len(bomb) < 1_000_000
    start = time.monotonic()
    with pytest.raises(DataLimitError, match='12000 x 12000'):
        open_image(at('bomb.png', bomb))
    assert time.monotonic() - start < 1.0  # nothing was decoded


def test_size_is_checked_before_any_pixel_is_read():
    # Only a header: decoding would fail as truncated, yet the size error
    # comes first.
    with pytest.raises(DataLimitError, match='11000 x 11000 = 121000000 '
                                             'total pixels'):
        open_image(at('header.png', png(11000, 11000, with_pixels=False)))
    with pytest.raises(DataLimitError, match='MAX_IMAGE_PIXELS'):
        open_image(at('huge.png', png(40000, 40000, with_pixels=False)))


def test_limit_follows_the_setting(monkeypatch):
    monkeypatch.setenv('SPACER_MAX_IMAGE_PIXELS', '400')
    assert open_image(at('ok.png', png(20, 20))).size == (20, 20)
    with pytest.raises(DataLimitError, match='21 x 20 = 420 total pixels'):
        open_image(at('big.png', png(21, 20)))


def _jpeg(size=(64, 48)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3),
                                               dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, 'JPEG')
    return out.getvalue()


@pytest.mark.parametrize('data, message', [
    (b'', 'not an image'),
    (b'hello, I am text', 'not an image'),
    (bytes(range(256)) * 4, 'not an image'),
    # Pillow would hand EPS to Ghostscript: not decoded at all.
    (b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n', 'not an image'),
    (_jpeg()[:len(_jpeg()) * 2 // 3], 'corrupt or truncated'),
    (_jpeg()[:300], 'unreadable image header'),
    (png(50, 50)[:60], 'corrupt or truncated'),
], ids=['empty', 'text', 'noise', 'eps', 'truncated-jpeg', 'jpeg-header-only',
        'truncated-png'])
def test_unreadable_bytes_raise_image_decode_error(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        open_image(at('x.img', data))


def test_error_names_where_the_image_is(tmp_path):
    path = tmp_path / 'photo.jpg'
    path.write_bytes(b'not a jpeg')
    with pytest.raises(ImageDecodeError, match='photo.jpg'):
        open_image(DataLocation('filesystem', str(path)))


@pytest.mark.parametrize('mode', ['L', 'RGB', 'RGBA', 'P', 'I;16', 'LA'])
def test_png_round_trip_keeps_pixel_mode_and_values(mode):
    image = Image.fromarray(np.arange(12 * 8, dtype=np.uint8).reshape(8, 12)
                            ).convert(mode)
    loc = DataLocation('memory', f'im-{mode}.png')
    store_image(loc, image)
    loaded = load_image(loc)
    assert loaded.mode == mode
    assert np.array_equal(np.asarray(loaded), np.asarray(image))


def test_opened_image_is_fully_decoded():
    image = open_image(at('a.jpg', _jpeg()))
    # Decoded already: the pixels are there without touching the source.
    default_memory_storage().clear()
    assert image.size == (64, 48) and image.getpixel((0, 0)) is not None
    assert image.format == 'JPEG' and image.mode == 'RGB'


def test_store_defaults_to_jpeg_and_converts_only_what_jpeg_cannot_hold():
    store_image(DataLocation('memory', 'noext'), Image.new('RGBA', (4, 4)))
    loaded = open_image(DataLocation('memory', 'noext'))
    assert loaded.format == 'JPEG' and loaded.mode == 'RGB'
    store_image(DataLocation('memory', 'gray.jpg'), Image.new('L', (4, 4)))
    assert open_image(DataLocation('memory', 'gray.jpg')).mode == 'L'


def test_decode_image_takes_plain_bytes():
    assert decode_image(png(3, 2), 'upload').size == (3, 2)
