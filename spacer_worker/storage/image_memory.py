"""What decoding an image will cost in memory, told from its header.

MAX_IMAGE_PIXELS bounds width x height, not bytes: a 16-bit or 32-bit
image, a progressive JPEG (libjpeg keeps every DCT coefficient of the
whole image, two bytes each, until the last scan) or a TIFF whose header
declares one huge tile or strip (libtiff allocates a buffer the size of
the declared tile and inflates into it, whatever the image's own size)
costs far more than its pixel count says; a tiled TIFF of 64 x 64 pixels
may declare a 8192 x 8192 tile and inflate 200 MB from a 200 KB file.
:func:`decoded_bytes` adds up what Pillow and its decoders will allocate,
so :func:`check_decoded_size` can refuse an image over
IMAGE_MAX_DECODED_BYTES before a pixel is decoded. Only the first frame
is ever decoded (the extraction reads one picture); an animated PNG or
WebP keeps a second canvas for it, which counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spacer_worker import config
from spacer_worker.exceptions import DataLimitError

if TYPE_CHECKING:
    from PIL.Image import Image

# TIFF tags: ImageWidth, BitsPerSample, SamplesPerPixel, RowsPerStrip,
# TileWidth, TileLength.
_WIDTH, _BITS, _SAMPLES, _ROWS_PER_STRIP, _TILE_W, _TILE_H = (
    256, 258, 277, 278, 322, 323)


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow keeps per pixel of ``mode``: multi-band 8-bit modes
    take four, single-band ones their sample size."""
    from PIL import ImageMode

    try:
        described = ImageMode.getmode(mode)
    except KeyError:
        return 4
    if len(described.bands) > 1:
        return 4 * max(1, int(described.typestr[-1]))
    return max(1, int(described.typestr[-1]))


def decoded_bytes(image: Image) -> int:
    """Bytes decoding ``image`` (its first frame) will allocate, at most."""
    width, height = image.size
    total = width * height * pixel_bytes(image.mode)
    if image.format == 'JPEG' and (image.info.get('progressive')
                                   or image.info.get('progression')):
        total += width * height * len(image.getbands()) * 2
    if image.format in ('PNG', 'WEBP') and getattr(image, 'is_animated',
                                                   False):
        total += width * height * 4
    if image.format == 'TIFF':
        total += _tiff_buffer(image)
    return total


def _tiff_buffer(image: Image) -> int:
    """The largest tile or strip buffer a TIFF's header declares."""
    tags = getattr(image, 'tag_v2', None) or {}

    def tag(number: int, default: Any) -> Any:
        value = tags.get(number, default)
        if isinstance(value, tuple):
            value = max(value) if value else default
        return value if isinstance(value, int) and value >= 0 else default

    width, height = image.size
    sample = max(1, -(-tag(_BITS, 8) // 8))
    pixel = sample * max(1, tag(_SAMPLES, 1))
    if _TILE_W in tags or _TILE_H in tags:
        return tag(_TILE_W, width) * tag(_TILE_H, height) * pixel
    rows = min(tag(_ROWS_PER_STRIP, height), 2 ** 32)
    return tag(_WIDTH, width) * rows * pixel


def check_decoded_size(image: Image, where: str) -> None:
    """DataLimitError if decoding ``image`` would need more memory than
    IMAGE_MAX_DECODED_BYTES allows."""
    limit = config.get('IMAGE_MAX_DECODED_BYTES')
    need = decoded_bytes(image)
    if need > limit:
        width, height = image.size
        raise DataLimitError(
            f"{where} ({image.format} {image.mode} {width} x {height}) "
            f"would take {need} bytes to decode (pixels, bit depth, tiles "
            f"or strips, progressive scans), over the "
            f"IMAGE_MAX_DECODED_BYTES limit of {limit}.")
