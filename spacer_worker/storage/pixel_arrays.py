"""RGB images decoded into an array that numpy can slice without a copy.

Pillow keeps an RGB pixel in four bytes (R, G, B and a padding byte) in
blocks of rows numpy cannot see: ``np.asarray(image)`` and every
``crop`` hand back packed copies (~0.2 ms per 224 px patch, 40 ms for the
200 points of a CoralNet image, on one core while the network waits).
Here Pillow's own decoder writes straight into a [height, width, 4] uint8
array allocated by this module, so extraction cuts a patch as 224
contiguous row slices (~0.02 ms).

An RGB JPEG can also be decoded on demand (:class:`RowDecoder`): rows
come out of the decoder top to bottom, so extraction can start on the
patches of the top rows while the rest of the image is still compressed,
instead of keeping a core idle for the whole decode (~50 ms for 12 Mpx).

Callers see ordinary Pillow images: any Pillow method on an image whose
decoding was left to a RowDecoder first decodes the rest. The array is
used only where Pillow really decoded into it (a plugin that allocates
its own memory is noticed, and its image used as it is).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

# Attributes set on images: (Pillow's image core, the array it draws on),
# and the RowDecoder still decoding one.
_ARRAY = '_spacer_pixel_array'
_DECODER = '_spacer_row_decoder'
# Compressed bytes fed to the decoder at a time: ~40 rows of a 12 Mpx
# photo, few enough Python steps (and Pillow's own block size).
_CHUNK = 1 << 16
# The padding byte Pillow's RGB unpackers write: a row whose last pixel
# has it is complete (rows are written whole, each left to right).
_WRITTEN = 255


def load_into_array(image: Image) -> None:
    """``image.load()``, into an array :func:`rgbx_array` returns after.

    Any mode other than RGB, or a Pillow without the hooks this needs,
    loads as Pillow always does.
    """
    core = _mapped_core(image) if image.mode == 'RGB' else None
    if core is None:
        image.load()
        return
    image.im = core[0]
    image.load()
    if image.im is core[0]:  # a plugin may have made its own memory
        setattr(image, _ARRAY, core)


def rgbx_array(image: Any) -> np.ndarray | None:
    """The [height, width, 4] uint8 pixels (R, G, B, pad) of an image
    decoded into an array, or None (also while a RowDecoder still has
    rows to decode: see :func:`row_decoder`)."""
    core = getattr(image, _ARRAY, None)
    if core is None:
        return None
    mapped, array = core
    # The image's memory may have been swapped since (``image.im = ...``).
    return array if getattr(image, 'im', None) is mapped else None


def row_decoder(image: Any) -> RowDecoder | None:
    """The RowDecoder still decoding ``image``, if any."""
    return getattr(image, _DECODER, None)


class RowDecoder:
    """Decodes an opened RGB JPEG into an array, rows on demand.

    ``rows`` says how many rows from the top are decoded; ``decode_to(n)``
    decodes at least n; ``done`` says the decoder reached the end.
    ``on_error(exception)`` gives the exception to raise when the data
    is corrupt or truncated.
    """

    def __init__(self, image: Image, core: tuple[Any, np.ndarray],
                 on_error: Callable[[Exception], Exception]):
        from PIL import Image as PILImage

        name, extents, offset, args = image.tile[0]
        decoder = PILImage._getdecoder(image.mode, name, args,
                                       image.decoderconfig)
        # Weakly: the image holds this decoder (no cycle keeping an
        # unfinished image's pixels alive until the garbage collector).
        self._image = weakref.ref(image)
        self.array = core[1]
        self.height = len(self.array)
        self.rows = 0
        self.done = False
        self._core = core
        self._decoder = decoder
        self._on_error = on_error
        self._pending = b''
        # Each row's last padding byte: zero until the decoder writes it.
        self._last_pads = self.array[:, -1, 3]
        image.im = core[0]
        decoder.setimage(image.im, extents)
        image.fp.seek(offset)
        # Any Pillow method calls load() first: that decodes the rest.
        image.load = self._load_rest
        setattr(image, _DECODER, self)

    @property
    def image(self) -> Image:
        image = self._image()
        if image is None:
            raise ReferenceError('the image being decoded is gone')
        return image

    def decode_to(self, rows: int) -> None:
        """Decode until at least ``rows`` rows are (all of them: finish)."""
        if rows >= self.height:
            self.finish()
            return
        while self.rows < rows and not self.done:
            self._step()

    def finish(self) -> None:
        """Decode the rest; the image is then an ordinary loaded image."""
        # To the decoder's end, not to the last row: the data may still
        # hold what follows it (the end marker), or be cut short there.
        while not self.done:
            self._step()

    def _step(self) -> None:
        import numpy as np

        image = self.image
        try:
            chunk = image.fp.read(_CHUNK)
            if not chunk:
                raise OSError(f'image file is truncated ({self.rows} of '
                              f'{self.height} rows decoded)')
            self._pending += chunk
            consumed, status = self._decoder.decode(self._pending)
            if consumed < 0:  # the end of the image data
                if status < 0:
                    from PIL import ImageFile
                    raise OSError(ImageFile.ERRORS.get(
                        status, f'decoder error {status}'))
                self._done()
                return
        except Exception as e:
            self._abandon()
            error = self._on_error(e)
            if error is e:
                raise
            raise error from e
        self._pending = self._pending[consumed:]
        # Rows are written in order, each one whole: count the leading
        # rows whose last pixel has its padding byte.
        unwritten = np.flatnonzero(self._last_pads[self.rows:] != _WRITTEN)
        self.rows = (self.rows + int(unwritten[0]) if unwritten.size
                     else self.height)

    def _done(self) -> None:
        image = self.image
        self._decoder.cleanup()
        self.rows = self.height
        self.done = True
        image.tile = []
        image.fp = None
        del image.load  # the class's own again
        delattr(image, _DECODER)
        setattr(image, _ARRAY, self._core)
        image.load_end()

    def _abandon(self) -> None:
        # The image is left unloaded: a later load() decodes it afresh
        # (and fails the same way), as Pillow would.
        self._decoder.cleanup()
        image = self.image
        del image.load
        delattr(image, _DECODER)

    def _load_rest(self) -> Any:
        self.finish()
        return self.image.load()


def decode_rows_on_demand(image: Image,
                          on_error: Callable[[Exception], Exception]
                          ) -> RowDecoder | None:
    """A RowDecoder for ``image`` (opened, not loaded) when it is an RGB
    JPEG, else None (load it as usual)."""
    from PIL import Image as PILImage

    tile = getattr(image, 'tile', None)
    if (image.format != 'JPEG' or image.mode != 'RGB' or tile is None
            or len(tile) != 1 or tile[0][0] != 'jpeg'
            or not hasattr(PILImage, '_getdecoder')):
        return None
    core = _mapped_core(image)
    if core is None:
        return None
    return RowDecoder(image, core, on_error)


def _mapped_core(image: Image) -> tuple[Any, np.ndarray] | None:
    import numpy as np
    from PIL import Image as PILImage

    map_buffer = getattr(PILImage.core, 'map_buffer', None)
    if map_buffer is None or not getattr(image, 'tile', None):
        # No tile: nothing to decode (Pillow's load() refuses such an
        # image, as long as it has no memory yet).
        return None
    width, height = image.size
    array = np.zeros((height, width, 4), np.uint8)
    try:
        # An RGB image core over the array: 4 bytes a pixel, rows of
        # 4 * width bytes, the layout Pillow gives RGB images itself.
        mapped = map_buffer(array, image.size, 'raw', 0, ('RGB', 0, 1))
    except (ValueError, TypeError):
        return None
    return mapped, array
