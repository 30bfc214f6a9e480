"""Read every feature file of a training once, into one float32 matrix.

PySpacer re-reads and re-decompresses every feature file in every epoch;
here each file is fetched once (concurrently: remote storage is mostly
latency), matched to its annotations with array operations, and written
into a :class:`FeatureMatrix` laid out as ``[train | ref | val]``, each
set's rows grouped per image in the set's own order, so an epoch can
replay PySpacer's per-image shuffle by moving blocks of rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spacer_worker import config
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.exceptions import (
    FeatureFileError,
    MessageError,
    RowColumnMismatchError,
    RowColumnMissingError,
)
from spacer_worker.storage.sandbox import in_context
from spacer_worker.training.matrix import DTYPE, FeatureMatrix

logger = logging.getLogger(__name__)

AUTO = 'auto'
DISABLED = 'disabled'
SET_NAMES = ('train', 'ref', 'val')


@dataclass
class FeatureSet:
    """One of train/ref/val: its rows in the shared matrix, per image."""

    name: str
    matrix: FeatureMatrix
    # Row of each image's first annotation, and its annotation count, in
    # the set's image order.
    block_starts: np.ndarray
    block_counts: np.ndarray
    # Labels of this set's rows, in row order.
    labels: np.ndarray

    @property
    def start(self) -> int:
        return int(self.block_starts[0]) if len(self.block_starts) else 0

    @property
    def nrows(self) -> int:
        return len(self.labels)

    def read_all(self) -> np.ndarray:
        return self.matrix.read(self.start, self.start + self.nrows)

    def chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, labels) in row order, ``rows`` at a time."""
        buffer = np.empty((min(rows, self.nrows), self.matrix.dim),
                          dtype=DTYPE)
        for first in range(0, self.nrows, rows):
            last = min(first + rows, self.nrows)
            x = self.matrix.read(self.start + first, self.start + last,
                                 out=buffer)
            yield x, self.labels[first:last]


@dataclass
class TrainingData:
    """The loaded sets (by name) and the matrix they share."""

    sets: dict[str, FeatureSet]
    matrix: FeatureMatrix
    files_read: int = 0
    load_seconds: float = 0.0

    def __getitem__(self, name: str) -> FeatureSet:
        return self.sets[name]

    def __getattr__(self, name: str) -> FeatureSet:
        sets = self.__dict__.get('sets') or {}
        if name in sets:
            return sets[name]
        raise AttributeError(name)


@dataclass
class _Layout:
    """Where each feature file's annotations go, before any file is read."""

    # feature location -> [(first matrix row, annotations)], one entry per
    # set the image appears in.
    targets: dict[Any, list[tuple[int, list]]]
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    nrows: int


def _plan(labels: Any, names: Sequence[str]) -> _Layout:
    targets: dict[Any, list[tuple[int, list]]] = {}
    sets = {}
    row = 0
    for name in names:
        image_labels = labels[name]
        starts, counts, set_labels = [], [], []
        for loc in image_labels.keys():
            annotations = image_labels[loc]
            starts.append(row)
            counts.append(len(annotations))
            set_labels.extend(label for _r, _c, label in annotations)
            targets.setdefault(loc, []).append((row, annotations))
            row += len(annotations)
        sets[name] = (np.asarray(starts, dtype=np.int64),
                      np.asarray(counts, dtype=np.int64),
                      np.asarray(set_labels))
    return _Layout(targets=targets, sets=sets, nrows=row)


def match_rows(rows: Any, cols: Any, annotations: Sequence[Any],
               where: str) -> np.ndarray:
    """Index of each annotation's (row, col) among the feature points.

    Where a point appears twice in a feature file, the last one wins, as
    in PySpacer.
    """
    feature_keys = (np.asarray(rows, dtype=np.int64) << 32) \
        + np.asarray(cols, dtype=np.int64)
    wanted = np.array([(r, c) for r, c, _label in annotations],
                      dtype=np.int64).reshape(-1, 2)
    wanted_keys = (wanted[:, 0] << 32) + wanted[:, 1]
    order = np.argsort(feature_keys, kind='stable')
    ordered = feature_keys[order]
    pos = np.searchsorted(ordered, wanted_keys, side='right') - 1
    found = (pos >= 0) & (ordered[np.maximum(pos, 0)] == wanted_keys)
    if not found.all():
        missing = np.flatnonzero(~found)
        r, c = wanted[missing[0]]
        raise RowColumnMismatchError(
            f"{where}: {len(missing)} labelled point(s) have no feature "
            f"vector in this file (example: row {r}, column {c}). The "
            f"labels' positions must be among the positions the features "
            f"were extracted at; re-extract features for these points.")
    return order[pos]


def _read_one(loc: Any) -> tuple[np.ndarray, Any, Any]:
    features = ImageFeatures.read(loc)
    if not features.valid_rowcol:
        raise RowColumnMissingError(
            f"{loc.key}: Features without rowcols are no longer supported "
            f"for training.")
    return features.feature_array(), features.rows, features.cols


def _where(loc: Any) -> str:
    return f"{getattr(loc, 'storage_type', '?')}:{getattr(loc, 'key', loc)}"


def _threads(locs: Sequence[Any]) -> int:
    wanted = config.get('TRAINING_LOAD_THREADS')
    if wanted > 0:
        return wanted
    if any(getattr(loc, 'is_remote', False) for loc in locs):
        return 16
    return max(1, min(4, os.cpu_count() or 1))


@contextlib.contextmanager
def _matrix_home(feature_cache: Any, nbytes: int) -> Iterator[Path | None]:
    """A temporary directory for a matrix too big for RAM, or None."""
    limit = config.get('TRAINING_IN_MEMORY_MB') * 1024 * 1024
    setting = str(feature_cache) if feature_cache is not None else AUTO
    if setting == DISABLED or nbytes <= limit:
        yield None
        return
    base = None if setting == AUTO else setting
    if base is not None:
        base = _checked_home(base)
    if base is not None and not Path(base).is_dir():
        raise MessageError(
            f"feature_cache_dir {base!r} is not an existing directory; "
            f"create it, or use FeatureCache.AUTO or FeatureCache.DISABLED.")
    with tempfile.TemporaryDirectory(dir=base,
                                     prefix='spacer-features-') as home:
        yield Path(home)


def _checked_home(base: str) -> str:
    """``base`` as the real path the sandbox allows, checked now, where the
    folder is made (a broker message's directory was checked at admission;
    a link swapped in since then would lead elsewhere)."""
    from spacer_worker.storage.sandbox import current

    sandbox = current()
    if sandbox is None:
        return base
    sandbox.feature_cache_dir(base)
    return os.path.realpath(base)


def _cache_setting(feature_loc: Any) -> Any:
    # The trainer seam passes the message's feature_cache_dir (AUTO,
    # DISABLED or a path); anything else (None, a DataLocation) means AUTO.
    if isinstance(feature_loc, (str, Path)):
        return str(getattr(feature_loc, 'value', feature_loc))
    return AUTO


@contextlib.contextmanager
def open_training_data(labels: Any, feature_cache: Any = AUTO,
                       names: Sequence[str] = SET_NAMES,
                       ) -> Iterator[TrainingData]:
    """Load the features of the sets ``names`` of ``labels`` (by default
    train/ref/val of a TrainingTaskLabels), each file once; the matrix (and
    any cache file) is released on exit."""
    t0 = time.monotonic()
    layout = _plan(labels, names)
    locs = list(layout.targets)
    if not locs:
        raise MessageError("labels: no images to load features from.")

    # The first file tells the feature dimension, hence the matrix size.
    first = _read_one(locs[0])
    dim = first[0].shape[1]
    nbytes = layout.nrows * dim * DTYPE.itemsize
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(
            _matrix_home(_cache_setting(feature_cache), nbytes))
        path = home / 'features.f32' if home is not None else None
        matrix = stack.enter_context(FeatureMatrix(layout.nrows, dim, path))
        logger.info("Loading %d feature files (%d points, %.0f MiB %s)",
                    len(locs), layout.nrows, nbytes / 2**20,
                    f'cached in {path}' if path else 'in memory')
        _fill(matrix, layout, locs, first)
        sets = {name: FeatureSet(name, matrix, *layout.sets[name])
                for name in names}
        data = TrainingData(sets=sets, matrix=matrix, files_read=len(locs),
                            load_seconds=time.monotonic() - t0)
        logger.info("Loaded %d feature files in %.1f s", len(locs),
                    data.load_seconds)
        yield data


def _fill(matrix: FeatureMatrix, layout: _Layout, locs: list[Any],
          first: tuple[np.ndarray, Any, Any]) -> None:
    stop = threading.Event()

    def place(loc: Any, loaded: tuple[np.ndarray, Any, Any] | None) -> None:
        if stop.is_set():
            return
        feat, rows, cols = loaded if loaded is not None else _read_one(loc)
        if feat.ndim != 2 or feat.shape[1] != matrix.dim:
            raise FeatureFileError(
                f"{_where(loc)}: feature vectors have dimension "
                f"{feat.shape[1:]} but {_where(locs[0])} has {matrix.dim}; "
                f"all images of a training must use the same extractor.")
        for start, image_annotations in layout.targets[loc]:
            index = match_rows(rows, cols, image_annotations, _where(loc))
            matrix.write(start, feat[index])

    place(locs[0], first)
    if len(locs) == 1:
        return
    pool = ThreadPoolExecutor(max_workers=_threads(locs),
                              thread_name_prefix='spacer-load')
    try:
        # in_context: each read runs under the caller's storage sandbox.
        futures = [pool.submit(in_context(place), loc, None)
                   for loc in locs[1:]]
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()
    finally:
        # On an error, or an interruption such as a task time limit, stop
        # at once: drop queued files, let running reads end.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
