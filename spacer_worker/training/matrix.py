"""One float32 feature matrix for a whole training, in RAM or in one file.

A large matrix lives in a file in the feature cache and is read with
positioned reads, one contiguous block per image: the file's pages stay in
the kernel's page cache (shared, reclaimable) instead of the worker's
resident memory, so a training set larger than RAM still trains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spacer_worker import config
from spacer_worker.exceptions import ConfigError

DTYPE = np.dtype(np.float32)


class FeatureMatrix:
    """``nrows x dim`` float32 rows; written once, read by row segments."""

    def __init__(self, nrows: int, dim: int, path: Path | None = None):
        self.nrows = nrows
        self.dim = dim
        self.path = path
        self._row_bytes = dim * DTYPE.itemsize
        self._array: np.ndarray | None = None
        self._fd: int | None = None
        if path is None:
            self._array = np.empty((nrows, dim), dtype=DTYPE)
        else:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                               0o600)
            os.ftruncate(self._fd, nrows * self._row_bytes)

    @property
    def on_disk(self) -> bool:
        return self._fd is not None

    @property
    def array(self) -> np.ndarray:
        """The rows of a matrix in RAM (not for one in a file)."""
        if self._array is None:
            raise ValueError('this feature matrix is in a file, not in RAM')
        return self._array

    @property
    def nbytes(self) -> int:
        return self.nrows * self._row_bytes

    def write(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` (rows x dim) at row ``start``."""
        block = np.ascontiguousarray(block, dtype=DTYPE)
        if block.shape[1:] != (self.dim,) or start + len(block) > self.nrows:
            raise ValueError(
                f"block of shape {block.shape} does not fit at row {start} "
                f"of a {self.nrows} x {self.dim} matrix")
        if self._array is not None:
            self._array[start:start + len(block)] = block
            return
        view = memoryview(block).cast('B')
        offset = start * self._row_bytes
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written

    def read(self, start: int, stop: int,
             out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a float32 array (a copy when on disk)."""
        return self.gather([(start, stop - start)], out)

    def gather(self, segments: Sequence[tuple[int, int]],
               out: np.ndarray | None = None) -> np.ndarray:
        """Concatenate the row segments ``(start, count)`` into ``out``."""
        total = sum(count for _start, count in segments)
        if out is None:
            out = np.empty((total, self.dim), dtype=DTYPE)
        else:
            out = out[:total]
        row = 0
        for start, count in segments:
            if self._array is not None:
                out[row:row + count] = self._array[start:start + count]
            else:
                self._pread_into(out[row:row + count], start)
            row += count
        return out

    def _pread_into(self, target: np.ndarray, start: int) -> None:
        view = memoryview(target).cast('B')
        offset = start * self._row_bytes
        while view:
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(f"feature cache file {self.path} is truncated")
            view = view[got:]
            offset += got

    def close(self) -> None:
        """Release the memory or the file (the file itself is removed by
        whoever owns its directory)."""
        self._array = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FeatureMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: TRAINING_PRECISION's values: the dtype the MLP trains in.
PRECISIONS = ('float32', 'float64')


def training_precision() -> str:
    value = config.get('TRAINING_PRECISION').strip().lower()
    if value not in PRECISIONS:
        raise ConfigError(
            f"TRAINING_PRECISION {value!r} is not one of "
            f"{', '.join(PRECISIONS)}.")
    return value
