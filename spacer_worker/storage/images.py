"""Images at a ``DataLocation``, opened safely.

The pixel count is read from the header and checked against the
MAX_IMAGE_PIXELS setting before any pixel is decoded, so a decompression
bomb costs a header read, not gigabytes of memory; so is the memory the
decoders will take (IMAGE_MAX_DECODED_BYTES: bit depth, tiles, strips,
progressive scans; see :mod:`spacer_worker.storage.image_memory`). Pixel modes are kept as
stored; extraction converts to RGB itself.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import TYPE_CHECKING, Any

from spacer_worker import config
from spacer_worker.exceptions import DataLimitError, ImageDecodeError
from spacer_worker.storage.blobs import describe, load_bytes, store_bytes
from spacer_worker.storage.image_memory import check_decoded_size
from spacer_worker.storage.pixel_arrays import decode_rows_on_demand, load_into_array

if TYPE_CHECKING:
    from PIL.Image import Image

# Errors Pillow's decoders raise on corrupt or truncated data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                  IndexError, TypeError, KeyError)
# Raster formats decoded in-process. Others (EPS runs Ghostscript, for one)
# are refused as not images.
FORMATS = ('JPEG', 'PNG', 'TIFF', 'BMP', 'GIF', 'WEBP', 'PPM')  # JPEG covers MPO
# Formats that cannot hold every mode; images are converted for these.
_RGB_ONLY = {'JPEG': {'RGB', 'L', 'CMYK'}}


def decode_image(data: bytes, where: str = 'image',
                 rows_on_demand: bool = False, name: str | None = None
                 ) -> Image:
    """Decode ``data`` fully, after checking its size against the limit.

    With ``rows_on_demand``, an RGB JPEG is left to a RowDecoder instead
    (``pixel_arrays.row_decoder(image)``): extraction decodes it as it
    reaches the rows its patches need, and any other use of the image
    decodes the rest first. Decoding errors are then raised there, as the
    same ImageDecodeError.
    """
    # Lazy: Pillow stays off the client, which imports storage.
    from PIL import Image as PILImage

    limit = config.get('MAX_IMAGE_PIXELS')
    _allow_pillow_up_to(limit)
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts.
            warnings.simplefilter('ignore', PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data), formats=FORMATS)
    except PILImage.DecompressionBombError as e:
        raise DataLimitError(
            f"{where} is larger than MAX_IMAGE_PIXELS={limit} ({e}).") from e
    except PILImage.UnidentifiedImageError as e:
        raise ImageDecodeError(
            f"{where} is not an image in a supported format "
            f"({', '.join(FORMATS)}).") from e
    except _DECODE_ERRORS as e:
        raise ImageDecodeError(
            f"{where} has an unreadable image header: {e}.") from e
    width, height = image.size
    if width * height > limit:
        image.close()
        # PySpacer's words; ``name`` is the image's key, as there.
        raise DataLimitError(
            f"Image {name or where} has {width} x {height} = "
            f"{width * height} total pixels, which is larger than the max "
            f"allowed of {limit}.")
    try:
        check_decoded_size(image, where)
    except DataLimitError:
        image.close()
        raise
    described = f"{where} ({image.format} {width} x {height})"

    def corrupt(e: Exception) -> Exception:
        # Not holding the image: a RowDecoder keeps this function.
        if isinstance(e, PILImage.DecompressionBombError):
            return DataLimitError(f"{where}: {e}")
        if isinstance(e, _DECODE_ERRORS):
            return ImageDecodeError(
                f"{described} is corrupt or truncated: {e}.")
        return e

    if rows_on_demand and decode_rows_on_demand(image, corrupt) is not None:
        return image
    try:
        # Into an array extraction can slice (pixel_arrays says why).
        load_into_array(image)
    except (PILImage.DecompressionBombError, *_DECODE_ERRORS) as e:
        raise corrupt(e) from e
    return image


def open_image(loc: Any, rows_on_demand: bool = False) -> Image:
    """Load and decode the image at ``loc``.

    DataLimitError when it has more pixels than MAX_IMAGE_PIXELS (checked
    from the header, before decoding); ImageDecodeError when the bytes are
    not a complete image. ``rows_on_demand``: see :func:`decode_image`.
    """
    data = load_bytes(loc)
    return decode_image(data, describe(loc), rows_on_demand,
                        name=getattr(loc, 'key', None))


def load_image(loc: Any) -> Image:
    """PySpacer's name for :func:`open_image`."""
    return open_image(loc)


def encode_image(image: Image, image_format: str = 'JPEG') -> bytes:
    """Encode ``image``; modes a format cannot hold are converted to RGB."""
    image_format = image_format.upper()
    allowed = _RGB_ONLY.get(image_format)
    if allowed is not None and image.mode not in allowed:
        image = image.convert('RGB')
    out = io.BytesIO()
    image.save(out, image_format)
    return out.getvalue()


def store_image(loc: Any, img: Image, image_format: str | None = None
                ) -> None:
    """Store ``img`` at ``loc``; the format follows the key's extension
    (``.png``, ``.jpg``...), JPEG when it has none, as PySpacer."""
    if image_format is None:
        image_format = _format_for(loc.key)
    store_bytes(loc, encode_image(img, image_format))


def _format_for(key: str) -> str:
    # Lazy: Pillow stays off the client, which imports storage.
    from PIL import Image as PILImage
    extension = os.path.splitext(key.split('?', 1)[0])[1].lower()
    return PILImage.registered_extensions().get(extension, 'JPEG')


def _allow_pillow_up_to(limit: int) -> None:
    # Pillow refuses images over twice its own global limit before we can
    # look at them; raise that limit only when ours is larger (never lower).
    # Lazy: Pillow stays off the client, which imports storage.
    from PIL import Image as PILImage
    current = PILImage.MAX_IMAGE_PIXELS
    if current is not None and limit > 2 * current:
        PILImage.MAX_IMAGE_PIXELS = limit
