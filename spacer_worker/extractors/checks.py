"""PySpacer's checks on an extraction's inputs, with typed errors.

Run before any pixel is cropped: the image size against MAX_IMAGE_PIXELS,
the point count against MAX_POINTS_PER_IMAGE, then every point must be an
integer (row, col) inside the image. Imports nothing heavy.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import DataLimitError, RowColumnInvalidError

__all__ = ['check_extract_inputs', 'check_point_count', 'checked_inputs']

# (id(image), id(rowcols)) the running task has checked.
_checked: ContextVar[tuple[int, int] | None] = ContextVar(
    'spacer_checked_inputs', default=None)


def _size_of(image_or_size: Any) -> tuple[int, int]:
    size = getattr(image_or_size, 'size', image_or_size)
    width, height = size
    return int(width), int(height)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_point_count(rowcols: Sequence[Any], im_key: str = 'image') -> None:
    """DataLimitError when there are more than MAX_POINTS_PER_IMAGE points;
    the extraction tasks call it before fetching the image."""
    max_points = config.get('MAX_POINTS_PER_IMAGE')
    if len(rowcols) > max_points:
        raise DataLimitError(
            f"{len(rowcols)} point locations were specified for image "
            f"{im_key}, and that's larger than the max allowed of "
            f"{max_points}.")


def check_extract_inputs(image: Any, rowcols: Sequence[Any],
                         im_key: str = 'image') -> None:
    """Raise DataLimitError or RowColumnInvalidError for unusable inputs.

    ``image`` is a PIL image (as in PySpacer), or anything with a ``.size``
    ``(width, height)``, or that pair itself; ``im_key`` names the image in
    messages.
    """
    if _checked.get() == (id(image), id(rowcols)):
        return  # the task checked these very inputs (checked_inputs)
    check_point_count(rowcols, im_key)
    _check_image_and_points(image, rowcols, im_key)


@contextmanager
def checked_inputs(image: Any, rowcols: Sequence[Any],
                   im_key: str = 'image') -> Iterator[None]:
    """The extraction tasks' check, once per extraction: the image's size
    and every point (the count was checked before the image was fetched,
    by :func:`check_point_count`). An extractor run inside skips its own
    :func:`check_extract_inputs` for these same objects."""
    _check_image_and_points(image, rowcols, im_key)
    token = _checked.set((id(image), id(rowcols)))
    try:
        yield
    finally:
        _checked.reset(token)


def _check_image_and_points(image: Any, rowcols: Sequence[Any],
                            im_key: str) -> None:
    width, height = _size_of(image)
    max_pixels = config.get('MAX_IMAGE_PIXELS')
    if width * height > max_pixels:
        raise DataLimitError(
            f"Image {im_key} has {width} x {height} = {width * height} total "
            f"pixels, which is larger than the max allowed of {max_pixels} "
            f"(MAX_IMAGE_PIXELS).")
    for index, point in enumerate(rowcols):
        try:
            row, col = point
        except (TypeError, ValueError):
            raise RowColumnInvalidError(
                f"{im_key}: rowcols[{index}] = {point!r} is not a "
                f"(row, column) pair.") from None
        for name, value, limit in (('Row', row, height),
                                   ('Column', col, width)):
            if not _is_int(value):
                raise RowColumnInvalidError(
                    f"{im_key}: {name} values must be integers. Given value "
                    f"was: {value!r} (rowcols[{index}]).")
            if value < 0:
                raise RowColumnInvalidError(
                    f"{im_key}: {name} values must be non-negative. Given "
                    f"value was: {value} (rowcols[{index}]).")
            if value >= limit:
                raise RowColumnInvalidError(
                    f"{im_key}: {name} value {value} falls outside this "
                    f"image's valid range of 0-{limit - 1}.")
