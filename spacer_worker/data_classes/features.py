"""PySpacer's ImageFeatures and PointFeatures: one image's feature
vectors, held as arrays.

``load``/``store`` read and write PySpacer's feature files through the
format in :mod:`spacer_worker.storage.features`, which knows arrays only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path, PurePosixPath
from pprint import pformat
from typing import TYPE_CHECKING, Any

from spacer_worker.data_classes.base import (
    COL,
    ROW,
    Annotation,
    DataLocation,
    FeatureLabelPair,
    LabelId,
)
from spacer_worker.data_classes.codec import Invalid, show
from spacer_worker.exceptions import (
    FeatureFileError,
    MessageError,
    RowColumnMismatchError,
    RowColumnMissingError,
)

if TYPE_CHECKING:
    import numpy as np


def _float_vector(data: Any) -> Any:
    """A feature vector as PySpacer holds it: a float64 numpy array, or a
    list of floats where numpy is not installed."""
    try:
        import numpy as np
    except ImportError:
        return [float(x) for x in data]
    return np.array(data, dtype=float)


def _float_matrix(feat: Any) -> np.ndarray:
    """float32 vectors stay float32 (half the bytes, all the network
    computes); anything else becomes float64, as PySpacer holds it."""
    import numpy as np

    dtype = getattr(feat, 'dtype', None)
    if dtype is not None and dtype == np.float32:
        return np.asarray(feat)
    return np.asarray(feat, dtype=np.float64)


class PointFeatures:
    """One point's feature vector (``row``/``col`` are None for legacy
    features that did not store positions)."""

    def __init__(self, row: int | None, col: int | None, data: Any):
        self.row = row
        self.col = col
        self.data = _float_vector(data)

    @classmethod
    def example(cls) -> PointFeatures:
        return cls(row=100, col=100, data=[1.1, 1.3, 1.12])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointFeatures):
            return NotImplemented
        return (self.row == other.row and self.col == other.col
                and _allclose(self.data, other.data))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # PySpacer's repr: the attributes, pretty-printed.
        return pformat(vars(self))


def _allclose(a: Any, b: Any) -> bool:
    try:
        import numpy as np
    except ImportError:
        return len(a) == len(b) and all(
            math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-8) for x, y in zip(a, b, strict=True))
    a = np.asarray(a)
    b = np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(a, b))


def _int_list(values: Any, name: str) -> list[int]:
    if hasattr(values, 'tolist'):
        values = values.tolist()
    try:
        return [ROW.convert(v) if name == 'rows' else COL.convert(v)
                for v in values]
    except Invalid as e:
        raise e.error_type(f'ImageFeatures.{name}: {e.reason}') from e
    except TypeError as e:
        raise MessageError(f'ImageFeatures.{name}: expected a sequence of '
                           f'integers, got {show(values)}') from e


class ImageFeatures:
    """Feature vectors of one image's points, held as arrays.

    Build with :meth:`from_arrays` (``feat`` is ``[npoints, feature_dim]``,
    a float array or, without numpy, a list of lists) or with PySpacer's
    constructor from a list of :class:`PointFeatures`.

    Vectors keep the precision they were given (float32 from our
    extractors, float64 from PySpacer's point features and files), so a
    stored and reloaded vector equals the one stored; ``feature_array()``
    gives float32 for training and scoring either way.
    """

    def __init__(self, point_features: Sequence[PointFeatures],
                 valid_rowcol: bool, feature_dim: int, npoints: int):
        points = list(point_features)
        if valid_rowcol:
            rows = [p.row for p in points]
            cols = [p.col for p in points]
        else:
            rows, cols = [], []
        feat = [p.data for p in points]
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            feat = (_float_matrix(feat) if feat
                    else np.zeros((0, feature_dim), dtype=np.float64))
        self._init(rows, cols, feat, bool(valid_rowcol), npoints, feature_dim)
        self._point_features = points

    @classmethod
    def from_arrays(cls, rows: Any, cols: Any, feat: Any,
                    valid_rowcol: bool = True,
                    npoints: int | None = None) -> ImageFeatures:
        """The fast constructor: no per-point objects are made."""
        self = cls.__new__(cls)
        if not valid_rowcol:
            rows, cols = [], []
        try:
            import numpy as np
        except ImportError:
            feat = [list(map(float, v)) for v in feat]
            dim = len(feat[0]) if feat else 0
        else:
            feat = _float_matrix(np.asarray(feat))
            if feat.ndim != 2:
                raise MessageError(
                    f'ImageFeatures.feat: expected a 2-d [npoints, '
                    f'feature_dim] array, got shape {feat.shape}.')
            dim = int(feat.shape[1])
        self._init(rows, cols, feat, bool(valid_rowcol),
                   len(feat) if npoints is None else npoints, dim)
        self._point_features = None
        return self

    def _init(self, rows: Any, cols: Any, feat: Any, valid_rowcol: bool,
              npoints: int, feature_dim: int) -> None:
        n = len(feat)
        if n == 0:
            raise MessageError('ImageFeatures: no points (feat is empty).')
        if npoints != n:
            raise MessageError(
                f'ImageFeatures.npoints = {npoints!r} but feat has {n} rows.')
        dims = {len(v) for v in feat} if isinstance(feat, list) else {
            feat.shape[1]}
        if dims != {feature_dim}:
            raise MessageError(
                f'ImageFeatures.feature_dim = {feature_dim!r} but the '
                f'vectors have length {sorted(dims)}.')
        if valid_rowcol and not (len(rows) == len(cols) == n):
            raise MessageError(
                f'ImageFeatures: {len(rows)} rows and {len(cols)} cols for '
                f'{n} feature vectors.')
        if valid_rowcol and not hasattr(rows, 'dtype'):
            rows = _int_list(rows, 'rows')
            cols = _int_list(cols, 'cols')
        self._rows = rows
        self._cols = cols
        self._feat = feat
        self.valid_rowcol = valid_rowcol
        self.feature_dim = int(feature_dim)
        self.npoints = int(npoints)
        self._rchash: dict[tuple[int, int], int] | None = None

    # --- array view -------------------------------------------------------

    @property
    def rows(self) -> Any:
        return self._rows

    @property
    def cols(self) -> Any:
        return self._cols

    def feature_array(self) -> np.ndarray:
        """All vectors as one float32 ``[npoints, feature_dim]`` array."""
        import numpy as np
        return np.asarray(self._feat, dtype=np.float32)

    def stored_array(self) -> np.ndarray:
        """All vectors at the precision they were given (float32 or
        float64): what a feature file holds."""
        import numpy as np
        return np.asarray(self._feat)

    def _row_lists(self) -> tuple[list[int], list[int]]:
        rows = self._rows.tolist() if hasattr(self._rows, 'tolist') else self._rows
        cols = self._cols.tolist() if hasattr(self._cols, 'tolist') else self._cols
        return [int(r) for r in rows], [int(c) for c in cols]

    # --- PySpacer's per-point view ------------------------------------

    @property
    def point_features(self) -> list[PointFeatures]:
        if self._point_features is None:
            if self.valid_rowcol:
                rows, cols = self._row_lists()
            else:
                rows = cols = [None] * self.npoints
            self._point_features = [
                PointFeatures(r, c, v)
                for r, c, v in zip(rows, cols, self._feat, strict=True)]
        return self._point_features

    def _index(self) -> dict[tuple[int, int], int]:
        if self._rchash is None:
            rows, cols = self._row_lists()
            self._rchash = {rc: i for i, rc in enumerate(zip(rows, cols, strict=True))}
        return self._rchash

    def indices_for(self, rowcols: Iterable[tuple[int, int]]) -> list[int]:
        """Row indices into ``feature_array()`` of the given points; raises
        RowColumnMismatchError naming one missing point."""
        if not self.valid_rowcol:
            raise RowColumnMissingError(
                'These features are in the legacy format without row/column '
                'positions; points cannot be looked up.')
        index = self._index()
        out = []
        for rc in rowcols:
            try:
                out.append(index[(rc[0], rc[1])])
            except KeyError:
                raise RowColumnMismatchError(
                    f"The labels' row-column positions don't match those of "
                    f'the feature vector (example: {(rc[0], rc[1])}).') from None
        return out

    def __getitem__(self, rowcol: tuple[int, int]) -> Any:
        """The feature vector at (row, col)."""
        if not self.valid_rowcol:
            raise ValueError('Method not supported for legacy features')
        i = self._index()[tuple(rowcol)]
        if self._point_features is not None:
            return self._point_features[i].data
        return _float_vector(self._feat[i])

    def get_array(self, rowcol: tuple[int, int]) -> np.ndarray:
        """The vector at (row, col) shaped ``[1, dim]`` for predict_proba."""
        import numpy as np
        return np.asarray(self[rowcol]).reshape(1, -1)

    def match_with_annotations(self, labels_data: list[Annotation]
                               ) -> Generator[FeatureLabelPair, None, None]:
        """(vector, label) per annotation; every annotated point must have
        features."""
        idx = self.indices_for([(r, c) for r, c, _ in labels_data])
        for i, (_, _, label) in zip(idx, labels_data, strict=True):
            yield _float_vector(self._feat[i]), label

    # --- construction helpers -----------------------------------------

    @classmethod
    def example(cls) -> ImageFeatures:
        return cls.from_arrays([100, 120], [100, 110],
                               [[1.1, 1.3, 1.12], [1.9, 1.3, 1.12]])

    @classmethod
    def deserialize(cls, data: Any) -> ImageFeatures:
        """The legacy JSON format: a list of vectors, no positions."""
        if not isinstance(data, list):
            raise MessageError(
                f'ImageFeatures.deserialize reads only the legacy format (a '
                f'list of feature vectors), got {type(data).__name__}.')
        if not data:
            raise MessageError('ImageFeatures: empty features file.')
        return cls.from_arrays([], [], data, valid_rowcol=False)

    def serialize(self) -> Any:
        raise NotImplementedError('Use .store() and .load() methods instead.')

    @classmethod
    def make_random(cls, point_labels: list[LabelId],
                    feature_dim: int) -> ImageFeatures:
        """Features whose values depend on each point's label (tests);
        float32, as extracted features are."""
        import numpy as np
        n = len(point_labels)
        base = np.array([hash(label) for label in point_labels], dtype=float)
        feat = base[:, None] + np.random.randn(n, feature_dim)
        return cls.from_arrays(list(range(n)), list(range(n)),
                               feat.astype(np.float32))

    @classmethod
    def from_bytes(cls, data: bytes,
                   where: str = 'feature file') -> ImageFeatures:
        """The features in a feature file's bytes (npz, or legacy JSON);
        FeatureFileError naming ``where`` when they are malformed."""

        from spacer_worker.storage.features import decode_features

        arrays = decode_features(data, where)
        try:
            return cls.from_arrays(arrays.rows, arrays.cols, arrays.feat,
                                   valid_rowcol=arrays.valid_rowcol,
                                   npoints=arrays.npoints)
        except MessageError as e:
            raise FeatureFileError(f"{where}: {e}") from e

    def to_bytes(self) -> bytes:
        """PySpacer's npz layout, byte-for-byte reproducible."""
        from spacer_worker.storage.features import encode_features

        return encode_features(self)

    @classmethod
    def load(cls, loc: DataLocation,
             filesystem_cache: str | None = None) -> ImageFeatures:
        """Read a feature file (npz, or legacy JSON), raising what PySpacer
        raises: FileNotFoundError for a missing file, AssertionError for one
        that fails a check, each with our detail. Web processes catch those
        two (CoralNet's feature inspection does) and store ``repr(err)``.
        Workers call :meth:`read`, whose typed errors go on the wire."""
        from spacer_worker.exceptions import DataNotFoundError, FeatureFileError

        try:
            return cls.read(loc, filesystem_cache)
        except DataNotFoundError as e:
            raise FileNotFoundError(str(e)) from e
        except FeatureFileError as e:
            raise AssertionError(str(e)) from e

    @classmethod
    def read(cls, loc: DataLocation,
             filesystem_cache: str | None = None) -> ImageFeatures:
        """Read a feature file (npz, or legacy JSON), with typed errors.
        With ``filesystem_cache`` (a directory), a remote file is kept there
        under its key and read from there next time, as in PySpacer."""
        from spacer_worker.storage.blobs import describe, load_bytes, store_bytes

        if not filesystem_cache or not loc.is_remote:
            return cls.from_bytes(load_bytes(loc), describe(loc))
        cached = DataLocation('filesystem', _cache_path(filesystem_cache, loc))
        if Path(cached.key).is_file():
            return cls.from_bytes(load_bytes(cached), describe(cached))
        data = load_bytes(loc)
        features = cls.from_bytes(data, f'{loc.storage_type}:{loc.key}')
        store_bytes(cached, data)
        return features

    def store(self, loc: DataLocation) -> None:
        """Write PySpacer's npz layout, atomically."""
        from spacer_worker.storage.blobs import store_bytes

        store_bytes(loc, self.to_bytes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageFeatures):
            return NotImplemented
        if (self.valid_rowcol, self.feature_dim, self.npoints) != (
                other.valid_rowcol, other.feature_dim, other.npoints):
            return False
        if self.valid_rowcol and self._row_lists() != other._row_lists():
            return False
        return _allclose(self._feat, other._feat)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f'ImageFeatures(npoints={self.npoints}, '
                f'feature_dim={self.feature_dim}, '
                f'valid_rowcol={self.valid_rowcol})')


def _cache_path(directory: str, loc: DataLocation) -> str:
    """Where a remote file is cached: under its key, as PySpacer does,
    but never outside ``directory``."""
    parts = PurePosixPath(loc.key.lstrip('/')).parts
    if not parts or '..' in parts:
        parts = (hashlib.sha256(loc.key.encode()).hexdigest(),)
    return str(Path(directory, *parts))


