"""Square patches around points, pixel for pixel as PySpacer crops them.

PySpacer converts the whole image to RGB, mirrors it by the crop size on
every side (numpy's 'reflect': the edge pixel is not repeated) and cuts a
224x224 window whose top-left corner is ``(row - 112, col - 112)``. Doing
that costs three full-image copies (convert, array, pad): 600 MB for an
8000x8000 image. Here each patch reads only its own window of the decoded
image; where a window crosses an edge, the missing rows/columns come from
the same mirror mapping, applied to indices. Images smaller than a crop
mirror more than once, exactly as numpy does.

Converting the window rather than the image to RGB gives the same pixels:
conversion to RGB is per pixel for every Pillow mode (no dithering).

An RGB image decoded into an array (``storage.pixel_arrays``) is cut far
faster, as slices of that array, for a network that takes the pixels as
they lie there: R, G, B and a padding byte it ignores (numpy copies 3 of
4 bytes one by one, ~6x slower than whole pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

CROP_SIZE = 224


def mirror_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """Map coordinates outside ``[0, size)`` back inside by reflection.

    Matches ``np.pad(mode='reflect')`` for any pad width: the mirror is
    periodic with period ``2 * (size - 1)``; a single pixel mirrors to itself.
    """
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded > size - 1, period - folded, folded)


def _window_start(center: int, crop_size: int) -> int:
    # PySpacer's int(center + pad - crop_size / 2) in coordinates padded by
    # pad = crop_size, taken back to image coordinates.
    return int(center + crop_size - crop_size / 2) - crop_size


def _axis(center: int, size: int, crop_size: int
          ) -> tuple[int, np.ndarray | None]:
    """Where a patch's window starts along one axis of ``size`` pixels,
    and the mirrored coordinates it reads where it crosses an edge (None
    inside: the window is the plain range)."""
    start = _window_start(center, crop_size)
    if 0 <= start and start + crop_size <= size:
        return start, None
    return start, mirror_indices(np.arange(start, start + crop_size), size)


def _mirrored(start: int, along: np.ndarray | None, crop_size: int
              ) -> np.ndarray:
    return np.arange(start, start + crop_size) if along is None else along


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    if im.mode != 'RGB':
        im = im.convert('RGB')
    return np.asarray(im)


def crop_patch(im: Image.Image, row: int, col: int,
               crop_size: int = CROP_SIZE,
               out: np.ndarray | None = None) -> np.ndarray:
    """The ``crop_size`` square RGB uint8 patch centred on (row, col).

    Writes into ``out`` ([crop, crop, 3] uint8) when given.
    """
    width, height = im.size
    top, rows = _axis(row, height, crop_size)
    left, cols = _axis(col, width, crop_size)
    if rows is None and cols is None:
        window = _to_rgb_array(im.crop((left, top, left + crop_size,
                                        top + crop_size)))
        if out is None:
            return window.copy()
        out[...] = window
        return out
    rows = _mirrored(top, rows, crop_size)
    cols = _mirrored(left, cols, crop_size)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    window = _to_rgb_array(im.crop((c0, r0, c1, r1)))
    patch = window[np.ix_(rows - r0, cols - c0)]
    if out is None:
        return patch
    out[...] = patch
    return out


def rows_needed(row: int, height: int, crop_size: int = CROP_SIZE) -> int:
    """How many rows from the top the patch centred on ``row`` reads
    (mirrored rows included)."""
    top, rows = _axis(row, height, crop_size)
    return top + crop_size if rows is None else int(rows.max()) + 1


def cut_rgbx(pixels: np.ndarray, row: int, col: int, out: np.ndarray,
             crop_size: int = CROP_SIZE) -> None:
    """crop_patch's window and mirror, cut from [h, w, 4] uint8 pixels
    (``storage.pixel_arrays``) into ``out`` ([crop, crop, 4]): whole
    4-byte pixels, rows copied as contiguous runs."""
    height, width = pixels.shape[:2]
    top, rows = _axis(row, height, crop_size)
    left, cols = _axis(col, width, crop_size)
    if rows is None and cols is None:
        out[...] = pixels[top:top + crop_size, left:left + crop_size]
        return
    rows = _mirrored(top, rows, crop_size)
    cols = _mirrored(left, cols, crop_size)
    # Pixels as single 4-byte values, rows gathered whole, then columns,
    # in the window they come from: ~8x faster than fancy indexing.
    r0, c0 = int(rows.min()), int(cols.min())
    window = pixels.view(np.uint32)[r0:int(rows.max()) + 1,
                                    c0:int(cols.max()) + 1, 0]
    np.take(window.take(rows - r0, axis=0), cols - c0, axis=1,
            out=out.view(np.uint32)[..., 0])


def iter_rgbx_batches(pixels: np.ndarray, rowcols: Sequence[tuple[int, int]],
                      batch_size: int, buffers: int,
                      decode_to: Callable[[int], None] | None = None,
                      crop_size: int = CROP_SIZE
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices into ``rowcols``, [b, crop, crop, 4] patches) from
    pixels in an array, the patches of the top rows first.

    ``decode_to(n)`` is called before a batch that reads the first n
    rows (a RowDecoder still decoding the array). The batches reuse
    ``buffers`` arrays in turn: a batch is overwritten ``buffers``
    batches later, so memory stays at a few batches and no batch costs
    fresh pages.
    """
    height = pixels.shape[0]
    needs = np.array([rows_needed(int(r), height, crop_size)
                      for r, _ in rowcols], np.int64)
    order = np.argsort(needs, kind='stable')
    ring = [np.empty((batch_size, crop_size, crop_size, 4), np.uint8)
            for _ in range(max(1, buffers))]
    for number, start in enumerate(range(0, len(order), batch_size)):
        indices = order[start:start + batch_size]
        if decode_to is not None:
            decode_to(int(needs[indices[-1]]))
        batch = ring[number % len(ring)][:len(indices)]
        for slot, i in enumerate(indices):
            row, col = rowcols[i]
            cut_rgbx(pixels, int(row), int(col), batch[slot], crop_size)
        yield indices, batch
    if decode_to is not None:
        # The rows below every patch too (while the last batches run): a
        # truncated image fails whatever its points.
        decode_to(height)


def iter_patch_batches(im: Image.Image, rowcols: Sequence[tuple[int, int]],
                       batch_size: int,
                       crop_size: int = CROP_SIZE) -> Iterator[np.ndarray]:
    """Patches in order, ``batch_size`` at a time, as [b, crop, crop, 3] uint8.

    Only one batch of patches exists at a time, so memory does not grow
    with the number of points. Decodes the image on first use.
    """
    im.load()
    for start in range(0, len(rowcols), batch_size):
        chunk = rowcols[start:start + batch_size]
        batch = np.empty((len(chunk), crop_size, crop_size, 3), np.uint8)
        for i, (row, col) in enumerate(chunk):
            crop_patch(im, int(row), int(col), crop_size, out=batch[i])
        yield batch
