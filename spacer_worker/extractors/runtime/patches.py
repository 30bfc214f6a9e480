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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
    top = _window_start(row, crop_size)
    left = _window_start(col, crop_size)
    bottom, right = top + crop_size, left + crop_size
    if top >= 0 and left >= 0 and bottom <= height and right <= width:
        window = _to_rgb_array(im.crop((left, top, right, bottom)))
        if out is None:
            return window.copy()
        out[...] = window
        return out
    rows = mirror_indices(np.arange(top, bottom), height)
    cols = mirror_indices(np.arange(left, right), width)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    window = _to_rgb_array(im.crop((c0, r0, c1, r1)))
    patch = window[np.ix_(rows - r0, cols - c0)]
    if out is None:
        return patch
    out[...] = patch
    return out


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
