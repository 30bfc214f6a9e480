"""PySpacer's data classes: where data lives, labels, features, results.

Same names, attributes and JSON shapes as ``spacer.data_classes`` in
PySpacer 0.14.0. Differences that matter:

* ``ImageFeatures`` keeps its points as arrays (``rows``, ``cols``,
  ``feature_array()``); PySpacer's per-point ``point_features`` list is
  built only when asked for.
* Bad values raise typed errors naming the field and value, not asserts.
* numpy is imported only by the methods that need it, so a client without
  numpy can build, serialize and read every message.
* ``load``/``store`` (PySpacer's API on the data classes) call
  :mod:`spacer_worker.storage`, the layer above, when called: the one
  upward import, declared in pyproject.toml's import contracts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
from collections import Counter
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlparse

from spacer_worker.codec import (
    FLOATS,
    LABEL_ID,
    OPT_STR,
    STR,
    Choice,
    DictOf,
    Encoded,
    Invalid,
    JsonText,
    ListOf,
    Message,
    Nested,
    Scalar,
    TupleOf,
    field,
    relabel,
    show,
)
from spacer_worker.constants import StorageType
from spacer_worker.exceptions import (
    InvalidLocationError,
    MessageError,
    RowColumnInvalidError,
    RowColumnMismatchError,
    RowColumnMissingError,
    SpacerError,
)

if TYPE_CHECKING:
    import numpy as np

# An int or a str, as scikit-learn accepts for targets.
LabelId: TypeAlias = int | str
Annotation: TypeAlias = tuple[int, int, LabelId]
FeatureLabelPair: TypeAlias = tuple[Any, LabelId]
FeatureLabelBatch: TypeAlias = tuple[list[Any], list[LabelId]]

__all__ = [
    'Annotation', 'DataClass', 'DataLocation', 'ImageFeatures', 'ImageLabels',
    'LabelId', 'PointFeatures', 'StorageType', 'ValResults',
]


class DataClass(Message):
    """PySpacer's ``DataClass``: a message that also reads and writes
    itself as JSON at a DataLocation (through :mod:`spacer_worker.storage`,
    so worker side)."""

    @classmethod
    def example(cls: type[_DC]) -> _DC:
        """An example member (tests, tutorials), as PySpacer's; each
        message class gives its own."""
        raise NotImplementedError(f'{cls.__name__} has no example.')

    @classmethod
    def load(cls: type[_DC], loc: DataLocation) -> _DC:
        from spacer_worker.storage import load_bytes  # the layer above
        try:
            data = json.loads(load_bytes(loc).decode('utf-8'))
        except ValueError as e:
            raise MessageError(
                f'{cls.__name__}: {loc.key!r} is not JSON: {e}') from e
        return cls.deserialize(data)

    def store(self, loc: DataLocation) -> None:
        from spacer_worker.storage import store_bytes  # the layer above
        store_bytes(loc, json.dumps(self.serialize()).encode('utf-8'))


_DC = TypeVar('_DC', bound=DataClass)


class _RowColCodec(Scalar):
    """A pixel coordinate: a non-negative int (PySpacer's rule)."""

    def __init__(self, what: str):
        super().__init__(int, name='an integer')
        self.what = what

    def convert(self, value: Any) -> int:
        if isinstance(value, bool) or not hasattr(value, '__index__'):
            raise Invalid(f'{self.what} values must be integers, got '
                          f'{show(value)} ({type(value).__name__})',
                          RowColumnInvalidError)
        value = operator.index(value)
        if value < 0:
            raise Invalid(f'{self.what} values must be non-negative, got '
                          f'{value}', RowColumnInvalidError)
        return value


ROW = _RowColCodec('row')
COL = _RowColCodec('column')
ROWCOL = TupleOf(ROW, COL, what='(row, col) pair')
ANNOTATION = TupleOf(ROW, COL, LABEL_ID, what='(row, col, label) triple')


class PointList(ListOf):
    """A list of (row, col) pairs or (row, col, label) triples.

    Training messages carry up to millions of annotations, so well-formed
    items (exact int/str types) take a tight loop; anything else goes
    through the per-item codec, which names the bad item.
    """

    def __init__(self, item: TupleOf, *, min_len: int = 0, what: str):
        super().__init__(item, min_len=min_len, what=what)
        self.size = len(item.items)

    _INT = frozenset((int,))
    _LABEL = frozenset((int, str))

    def _fast(self, value: Any) -> list | None:
        """The items as tuples if all are well-formed, else None; every
        loop here runs in C (map/zip/set), as these lists are long."""
        try:
            items = list(map(tuple, value))
        except TypeError:
            return None
        if not items:
            return items
        if set(map(len, items)) != {self.size}:
            return None
        columns = list(zip(*items, strict=True))
        for positions in columns[:2]:
            if set(map(type, positions)) != self._INT or min(positions) < 0:
                return None
        if self.size == 3 and not set(map(type, columns[2])) <= self._LABEL:
            return None
        return items

    def convert(self, value: Any) -> list:
        self._check(value)
        fast = self._fast(value)
        return fast if fast is not None else super().convert(value)

    def decode(self, data: Any) -> list:
        return self.convert(data)

    def encode(self, value: Any) -> list:
        # Items are already JSON-native tuples of ints/strs.
        return list(value)


ROWCOLS = PointList(ROWCOL, min_len=1, what='(row, col) pairs')
ANNOTATIONS = PointList(ANNOTATION, what='(row, col, label) triples')


@dataclasses.dataclass(frozen=True, eq=True, repr=False)
class DataLocation(DataClass):
    """Where a blob lives: a filesystem path, an in-memory key, an S3
    object (needs ``bucket_name``) or a URL (read-only). Hashable, so it
    keys ImageLabels."""

    storage_type: str = field(Choice(StorageType, InvalidLocationError))
    key: str = field(STR)
    bucket_name: str | None = field(OPT_STR, default=None)

    def validate(self) -> None:
        if self.storage_type == StorageType.S3 and not self.bucket_name:
            raise InvalidLocationError(
                f'DataLocation.bucket_name = {self.bucket_name!r}: s3 storage '
                f'needs a bucket_name (key {self.key!r}).')

    def __repr__(self) -> str:
        bucket = f', bucket_name={self.bucket_name!r}' if self.bucket_name else ''
        return (f'DataLocation({self.storage_type.value!r}, '
                f'{self.key!r}{bucket})')

    @classmethod
    def example(cls) -> DataLocation:
        return cls('memory', 'my_blob')

    @property
    def filename(self) -> str:
        if self.storage_type == StorageType.URL:
            return Path(urlparse(self.key).path).name
        return Path(self.key).name

    @property
    def is_remote(self) -> bool:
        return self.storage_type in (StorageType.URL, StorageType.S3)

    @property
    def is_writable(self) -> bool:
        return self.storage_type != StorageType.URL


def _location_codec() -> Nested:
    # InvalidLocationError from a bad location keeps its type when decoding.
    return Nested(DataLocation)


LOCATION = _location_codec()


class ImageLabels(Encoded):
    """Annotations (row, col, label) per feature-vector location.

    JSON form (PySpacer's): ``{json.dumps(loc.serialize()): [[r, c, l], ...]}``.
    """

    _codec = DictOf(JsonText(LOCATION), ANNOTATIONS)

    def __init__(self, data: dict[DataLocation, list[Annotation]] | None = None):
        self._data: dict[DataLocation, list[Annotation]] = {}
        self.label_count_per_class: Counter = Counter()
        self.has_remote_data = False
        self.filesystem_cache: str | None = None
        if data is not None and not isinstance(data, dict):
            raise MessageError(
                f'ImageLabels.data: expected a dict of DataLocation to '
                f'annotation lists, got {show(data)}')
        for loc, image_annotations in (data or {}).items():
            self.add_image(loc, image_annotations)

    def add_image(self, feature_loc: DataLocation,
                  image_annotations: Iterable[Annotation]) -> None:
        """Add (or replace) one feature file's annotations."""
        if not isinstance(feature_loc, DataLocation):
            raise MessageError(
                f'ImageLabels: keys must be DataLocations (the feature '
                f'file of each image), got {show(feature_loc)} '
                f'({type(feature_loc).__name__}); wrap a path as '
                f"DataLocation('filesystem', path).")
        if not isinstance(image_annotations, (list, tuple)):
            try:
                image_annotations = list(image_annotations)
            except TypeError as e:
                raise MessageError(
                    f'ImageLabels[{feature_loc!r}]: expected a list of (row, '
                    f'col, label) triples, got {show(image_annotations)}') from e
        try:
            annotations = ANNOTATIONS.convert(image_annotations)
        except (Invalid, SpacerError) as e:
            raise relabel(e, f'ImageLabels[{feature_loc!r}]',
                          image_annotations) from e
        self._add(feature_loc, annotations)

    def _add(self, feature_loc: DataLocation, annotations: list) -> None:
        if feature_loc in self._data:
            # Replacing: forget the old image's labels in the counts.
            self.label_count_per_class.subtract(
                label for _, _, label in self._data[feature_loc])
            self.label_count_per_class = +self.label_count_per_class
        self._data[feature_loc] = annotations
        self.label_count_per_class.update(label for _, _, label in annotations)
        if feature_loc.is_remote:
            self.has_remote_data = True

    def set_filesystem_cache(self, dir_path: str | None) -> None:
        self.filesystem_cache = dir_path

    @property
    def classes_set(self) -> set[LabelId]:
        return set(self.label_count_per_class)

    @property
    def label_count(self) -> int:
        return self.label_count_per_class.total()

    @classmethod
    def example(cls) -> ImageLabels:
        return cls({
            DataLocation('filesystem', f'img{i}.features'): anns
            for i, anns in enumerate([
                [(100, 200, 3), (101, 200, 2)],
                [(100, 202, 3), (101, 200, 3)],
                [(100, 202, 3), (101, 200, 3)],
                [(100, 202, 3), (101, 200, 3)]], start=1)})

    def _encoded(self) -> dict:
        return self._data

    @classmethod
    def _from_decoded(cls, value: dict) -> ImageLabels:
        labels = cls()
        for loc, checked in value.items():  # already checked by _codec
            labels._add(loc, checked)
        return labels

    def keys(self) -> Iterable[DataLocation]:
        return self._data.keys()

    def items(self) -> Iterable[tuple[DataLocation, list[Annotation]]]:
        return self._data.items()

    def filter_classes(self, accepted_classes: Iterable[LabelId]) -> ImageLabels:
        """A new ImageLabels keeping only labels in ``accepted_classes``;
        images left with no labels are dropped."""
        accepted = set(accepted_classes)
        filtered = ImageLabels()
        for loc, image_annotations in self._data.items():
            kept = [a for a in image_annotations if a[2] in accepted]
            if kept:
                filtered.add_image(loc, kept)
        return filtered

    def load_data_in_batches(self, batch_size: int | None = 1000,
                             random_seed: int | None = None,
                             ) -> Generator[FeatureLabelBatch, None, None]:
        """Yield (feature vectors, labels) batches, loading one image's
        features at a time. With ``random_seed``, images come in the order
        PySpacer gives for that seed (it seeds numpy's global generator)."""
        import numpy as np

        keys = list(self._data)
        if random_seed is not None:
            np.random.seed(random_seed)
            np.random.shuffle(keys)
        features_buf: list = []
        labels_buf: list = []
        for loc in keys:
            features = ImageFeatures.load(loc, self.filesystem_cache)
            try:
                pairs = list(features.match_with_annotations(self._data[loc]))
            except RowColumnMissingError as e:
                raise RowColumnMissingError(
                    f'{loc.key}: features without row/column positions '
                    f'(legacy format) cannot be used for training.') from e
            except RowColumnMismatchError as e:
                raise RowColumnMismatchError(f'{loc.key}: {e}') from e
            for vector, label in pairs:
                features_buf.append(vector)
                labels_buf.append(label)
            if batch_size:
                while len(features_buf) > batch_size:
                    yield features_buf[:batch_size], labels_buf[:batch_size]
                    features_buf = features_buf[batch_size:]
                    labels_buf = labels_buf[batch_size:]
        if features_buf:
            yield features_buf, labels_buf

    def load_all_data(self, random_seed: int | None = None) -> FeatureLabelBatch:
        return next(self.load_data_in_batches(batch_size=None,
                                              random_seed=random_seed))

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, loc: DataLocation) -> list[Annotation]:
        return self._data[loc]

    def __contains__(self, loc: object) -> bool:
        return loc in self._data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageLabels):
            return NotImplemented
        return (self._data == other._data
                and self.filesystem_cache == other.filesystem_cache)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f'ImageLabels({len(self._data)} images, '
                f'{self.label_count} labels, '
                f'{len(self.label_count_per_class)} classes)')


def _float_vector(data: Any) -> Any:
    """A feature vector as PySpacer holds it: a float64 numpy array, or a
    list of floats where numpy is not installed."""
    try:
        import numpy as np
    except ImportError:
        return [float(x) for x in data]
    return np.array(data, dtype=float)


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
        return f'PointFeatures(row={self.row}, col={self.col}, dim={len(self.data)})'


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
    a float32 array or, without numpy, a list of lists) or with PySpacer's
    constructor from a list of :class:`PointFeatures`.
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
            feat = (np.asarray(feat, dtype=np.float32) if feat
                    else np.zeros((0, feature_dim), dtype=np.float32))
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
            feat = np.asarray(feat, dtype=np.float32)
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
        """Features whose values depend on each point's label (tests)."""
        import numpy as np
        n = len(point_labels)
        base = np.array([hash(label) for label in point_labels], dtype=float)
        feat = base[:, None] + np.random.randn(n, feature_dim)
        return cls.from_arrays(list(range(n)), list(range(n)), feat)

    @classmethod
    def load(cls, loc: DataLocation,
             filesystem_cache: str | None = None) -> ImageFeatures:
        """Read a feature file (npz, or legacy JSON). With
        ``filesystem_cache`` (a directory), a remote file is kept there
        under its key and read from there next time, as in PySpacer."""
        # The layer above (see the module docstring).
        from spacer_worker.storage import load_bytes, load_features, store_bytes
        from spacer_worker.storage.features import decode_features
        if not filesystem_cache or not loc.is_remote:
            return load_features(loc)
        cached = DataLocation('filesystem', _cache_path(filesystem_cache, loc))
        if Path(cached.key).is_file():
            return load_features(cached)
        data = load_bytes(loc)
        features = decode_features(data, f'{loc.storage_type}:{loc.key}')
        store_bytes(cached, data)
        return features

    def store(self, loc: DataLocation) -> None:
        """Write PySpacer's npz layout, atomically."""
        from spacer_worker.storage import store_features  # the layer above
        store_features(loc, self)

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


INDEX = Scalar(int, name='an integer')


@dataclasses.dataclass(eq=True)
class ValResults(DataClass):
    """Validation results; ``gt``/``est`` index into ``classes``."""

    scores: list[float] = field(FLOATS)
    gt: list[int] = field(ListOf(INDEX, what='class indices'))
    est: list[int] = field(ListOf(INDEX, what='class indices'))
    classes: list[LabelId] = field(ListOf(LABEL_ID, what='label ids'))

    def validate(self) -> None:
        if not (len(self.gt) == len(self.est) == len(self.scores)):
            raise MessageError(
                f'ValResults: scores, gt and est must have the same length, '
                f'got {len(self.scores)}, {len(self.gt)}, {len(self.est)}.')
        if not self.gt:
            raise MessageError('ValResults: gt is empty (no validation '
                               'points).')
        for name in ('gt', 'est'):
            values = getattr(self, name)
            bad = next((v for v in values
                        if not 0 <= v < len(self.classes)), None)
            if bad is not None:
                raise MessageError(
                    f'ValResults.{name}: index {bad} out of range for '
                    f'{len(self.classes)} classes.')

    @classmethod
    def example(cls) -> ValResults:
        return cls(scores=[.9, .8, .7], gt=[0, 1, 0], est=[0, 1, 1],
                   classes=[121, 1222])


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker._exports import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'RemoteStorage': 'spacer_worker.storage.base:RemoteStorage',
    'storage_factory': 'spacer_worker.storage.factory:storage_factory',
}, globals())
