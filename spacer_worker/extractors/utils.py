"""PySpacer's patch helpers (``spacer.extractors.utils``): the same patches,
cut without padding the whole image first.

Worker side: needs numpy and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

__all__ = ['crop_patches', 'crop_simple']


def crop_patches(im: Image, rowcols: Sequence[tuple[int, int]],
                 crop_size: int) -> list[np.ndarray]:
    """The ``crop_size`` square RGB patch centred on each (row, col),
    mirrored at the image's edges, as PySpacer cuts them."""
    from spacer_worker.extractors.runtime.patches import crop_patch
    return [crop_patch(im, int(row), int(col), crop_size)
            for row, col in rowcols]


def crop_simple(im: np.ndarray, center: tuple[int, int],
                crop_size: int) -> np.ndarray:
    """The ``crop_size`` square of an HxWxC array whose centre is
    ``center`` (row, col); the caller pads ``im`` when the square may
    leave it."""
    top = int(center[0] - crop_size / 2)
    left = int(center[1] - crop_size / 2)
    return im[top:top + crop_size, left:left + crop_size, :]
