"""Where data lives and how messages read and write themselves.

:class:`DataClass` is PySpacer's base of every message (JSON through
:mod:`.codec`, ``load``/``store`` at a :class:`DataLocation`);
:class:`DataLocation` names a file in one storage backend; the row/column
codecs check point positions for every message that carries them;
:class:`LocationRoot` is a configured place where the worker keeps files
of its own (offloaded payloads, checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlparse

from spacer_worker.constants import StorageType
from spacer_worker.data_classes.codec import (
    LABEL_ID,
    OPT_STR,
    STR,
    Choice,
    Invalid,
    ListOf,
    Message,
    Nested,
    Scalar,
    TupleOf,
    field,
    show,
)
from spacer_worker.exceptions import (
    ConfigError,
    InvalidLocationError,
    MessageError,
    RowColumnInvalidError,
)

# An int or a str, as scikit-learn accepts for targets.
LabelId: TypeAlias = int | str
Annotation: TypeAlias = tuple[int, int, LabelId]
FeatureLabelPair: TypeAlias = tuple[Any, LabelId]
FeatureLabelBatch: TypeAlias = tuple[list[Any], list[LabelId]]


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
        from spacer_worker.storage import load_bytes  # when called
        try:
            data = json.loads(load_bytes(loc).decode('utf-8'))
        except ValueError as e:
            raise MessageError(
                f'{cls.__name__}: {loc.key!r} is not JSON: {e}') from e
        return cls.deserialize(data)

    def store(self, loc: DataLocation) -> None:
        from spacer_worker.storage import store_bytes  # when called
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


@dataclass(frozen=True)
class LocationRoot:
    """A place named by a setting (``s3://bucket/prefix``,
    ``memory://prefix`` or an absolute directory) where the worker keeps
    files of its own: offloaded payloads, training checkpoints."""

    storage_type: str
    bucket_name: str | None
    prefix: str

    @classmethod
    def parse(cls: type[_Root], text: str, setting: str) -> _Root:
        """The root ``text`` names; ConfigError naming ``setting``."""
        text = (text or '').strip()
        where = f'{setting} {text!r}'
        if text.startswith('s3://'):
            bucket, _, prefix = text[5:].partition('/')
            if not bucket:
                raise ConfigError(f'{where}: s3:// needs a bucket name.')
            return cls(StorageType.S3.value, bucket, prefix.strip('/'))
        if text.startswith('memory://'):
            return cls(StorageType.MEMORY.value, None,
                       text[9:].strip('/') or 'payloads')
        if text.startswith('file://'):
            text = text[7:]
        if not text.startswith('/'):
            raise ConfigError(
                f"{where}: expected s3://bucket/prefix, memory://prefix or "
                f"an absolute directory path.")
        return cls(StorageType.FILESYSTEM.value, None,
                   posixpath.normpath(text))

    def location(self, name: str) -> DataLocation:
        key = f'{self.prefix}/{name}' if self.prefix else name
        return DataLocation(self.storage_type, key, self.bucket_name)

    def __str__(self) -> str:
        if self.storage_type == StorageType.S3:
            return f's3://{self.bucket_name}/{self.prefix}'
        if self.storage_type == StorageType.MEMORY:
            return f'memory://{self.prefix}'
        return self.prefix


_Root = TypeVar('_Root', bound=LocationRoot)
