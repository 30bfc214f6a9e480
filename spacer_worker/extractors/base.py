"""Feature extractor descriptions: what to run, not the running network.

A :class:`FeatureExtractor` in a message is a class path plus the data
locations (weights...) and their sha256 hashes. It builds and serializes
without torch; calling it (worker only) materialises the network through
:mod:`spacer_worker.extractors.runtime`.

Deserializing instantiates only allowlisted classes: the built-ins (under
PySpacer's or our module paths) and the class paths listed in the
``EXTRA_EXTRACTOR_CLASSES`` setting. Anything else raises
UnknownClassError without importing it.
"""

from __future__ import annotations

import abc
import hashlib
import random
import time
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spacer_worker.data_classes import LOCATION, DataLocation, ImageFeatures
from spacer_worker.data_classes.codec import (
    STR,
    Description,
    DictOf,
    Invalid,
    relabel,
    resolve_class,
    show,
)
from spacer_worker.data_classes.results import ExtractFeaturesReturnMsg
from spacer_worker.exceptions import HashMismatchError, MessageError, SpacerError
from spacer_worker.storage import storage_factory

if TYPE_CHECKING:
    from PIL.Image import Image

LOCATIONS = DictOf(STR, LOCATION)
HASHES = DictOf(STR, STR)


class FeatureExtractor(Description, abc.ABC):
    """Base of extractor descriptions, with PySpacer's constructor.

    Subclasses list their required ``data_locations`` keys in
    ``DATA_LOCATION_KEYS``. A custom subclass (allowed through
    EXTRA_EXTRACTOR_CLASSES) either overrides ``__call__`` or, as in
    PySpacer, implements ``patches_to_features``.
    """

    DATA_LOCATION_KEYS: ClassVar[list[str]] = []
    CROP_SIZE: ClassVar[int] = 224
    BATCH_SIZE: ClassVar[int] = 10

    def __init__(self, data_locations: Mapping[str, DataLocation],
                 data_hashes: Mapping[str, str] | None = None,
                 **kwargs: Any):
        name = type(self).__name__
        try:
            self.data_locations: dict[str, DataLocation] = LOCATIONS.convert(
                data_locations)
        except (Invalid, SpacerError) as e:
            raise relabel(e, f'{name}.data_locations', data_locations) from e
        for key in self.DATA_LOCATION_KEYS:
            if key not in self.data_locations:
                raise MessageError(
                    f'{name}.data_locations = {show(data_locations)}: '
                    f'missing the {key!r} location; {name} needs '
                    f'{", ".join(map(repr, self.DATA_LOCATION_KEYS))}.')
        try:
            self.data_hashes: dict[str, str] = HASHES.convert(
                data_hashes or {})
        except (Invalid, SpacerError) as e:
            raise relabel(e, f'{name}.data_hashes', data_hashes) from e

    # --- running (worker only) ---------------------------------------------

    def __call__(self, im: Image, rowcols: Sequence[tuple[int, int]]
                 ) -> tuple[ImageFeatures, ExtractFeaturesReturnMsg]:
        """Features at ``rowcols``; PySpacer's generic path: crop patches,
        then ``patches_to_features``."""
        from spacer_worker.extractors.runtime.patches import crop_patch  # worker only

        start = time.time()
        patches = [crop_patch(im, int(r), int(c), self.CROP_SIZE)
                   for r, c in rowcols]
        feats, loaded_remotely = self.patches_to_features(patches)
        features = ImageFeatures.from_arrays(
            [r for r, _ in rowcols], [c for _, c in rowcols], feats)
        return features, ExtractFeaturesReturnMsg(
            extractor_loaded_remotely=bool(loaded_remotely),
            runtime=time.time() - start)

    def patches_to_features(self, patch_list: list[Any]) -> tuple[Any, bool]:
        """Vectors for RGB uint8 patches, and whether data was loaded
        remotely; custom extractors implement this or ``__call__``."""
        raise NotImplementedError(
            f'{type(self).__name__} implements neither __call__ nor '
            f'patches_to_features, so it cannot extract features.')

    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """Length of each feature vector."""

    def check_data_hash(self, data: bytes, key: str) -> None:
        """Raise HashMismatchError if ``data`` does not match the sha256
        given for ``key`` in data_hashes (no hash given: no check)."""
        expected = self.data_hashes.get(key)
        if expected is None:
            return
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise HashMismatchError(
                f"{type(self).__name__}: the '{key}' data at "
                f'{self.data_locations[key]!r} has sha256 {actual}, but '
                f'data_hashes says {expected}. The file changed or is '
                f'corrupt; fix the file or the hash.')

    # --- PySpacer's data-file helpers (for custom extractors) -----------------
    # Backed by the worker's verified weights cache (extractors.runtime.
    # weights): a remote file is cached per location and checked against
    # data_hashes, cached copies included, not keyed by file name alone.

    def load_datastream(self, key: str) -> tuple[BytesIO, bool]:
        """The ``key`` data file as a stream, and whether it was
        downloaded by this call (remote files are cached)."""
        # Lazy: the cache lives on the worker side (torch); a call-time bridge.
        from spacer_worker.extractors.runtime import weights

        fetched = weights.fetch(self, key)
        return BytesIO(fetched.data), fetched.loaded_remotely

    def load_data_into_filesystem(self, key: str) -> tuple[str, bool]:
        """A local path holding the ``key`` data file, and whether it was
        downloaded by this call."""
        # Lazy: worker side (torch), as in load_datastream.
        from spacer_worker.extractors.runtime import weights

        loc = self.data_locations[key]
        if loc.storage_type == 'filesystem':
            # The caller opens this path itself: the sandbox must see it.
            from spacer_worker.storage.blobs import check_readable

            check_readable(loc)
            return loc.key, False
        fetched = weights.fetch(self, key)
        path = weights.cache_path(loc, fetched.sha256)
        if not path.is_file():  # fetch caches remote data only (not memory)
            storage_factory('filesystem').store(str(path), fetched.data)
        return str(path), fetched.loaded_remotely

    def data_filepath_for_cache(self, key: str) -> Path:
        """Where the ``key`` data file is cached: the cache folder of its
        location (a copy inside is named by its sha256)."""
        # Lazy: worker side (torch), as in load_datastream.
        from spacer_worker.extractors.runtime import weights

        return weights.location_dir(self.data_locations[key])

    def decache_remote_loaded_file(self, key: str) -> None:
        """Forget the cached copy of a remote ``key`` data file."""
        # Lazy: worker side (torch), as in load_datastream.
        from spacer_worker.extractors.runtime import weights

        weights.evict(self, key)

    # --- serialization -------------------------------------------------------

    def serialize(self) -> dict:
        return {
            'class_path': self.class_path(),
            'data_locations': LOCATIONS.encode(self.data_locations),
            'data_hashes': dict(self.data_hashes),
        }

    @staticmethod
    def deserialize(data: Any) -> FeatureExtractor:
        """Rebuild an allowlisted extractor from PySpacer's dict. Keys other
        than class_path/data_locations go to the constructor, as in
        PySpacer (whose base class ignores the ones it does not know)."""
        class_path, kwargs = Description.split_class_path(
            data, 'FeatureExtractor')
        cls = extractor_class(class_path)
        try:
            kwargs['data_locations'] = LOCATIONS.decode(
                kwargs.get('data_locations', {}))
        except (Invalid, SpacerError) as e:
            raise relabel(e, f'{cls.__name__}.data_locations',
                          data.get('data_locations')) from e
        return Description.build(cls, kwargs, data)


# Every accepted spelling of a built-in's class path -> its class. Filled by
# @builtin in each built-in's module; the package's __init__ imports them
# all, so the table is complete whenever this module is importable.
_BUILTINS: dict[str, type[FeatureExtractor]] = {}


def builtin(cls: type[FeatureExtractor]) -> type[FeatureExtractor]:
    """Allowlist a built-in extractor under PySpacer's and our paths."""
    for path in (cls.__dict__['PYSPACER_CLASS_PATH'],
                 f'{cls.__module__}.{cls.__name__}',
                 f'spacer.extractors.{cls.__name__}',
                 f'spacer_worker.extractors.{cls.__name__}'):
        _BUILTINS[path] = cls
    return cls


@builtin
class DummyExtractor(FeatureExtractor):
    """Random features of the right shape; no model (tests, demos)."""

    PYSPACER_CLASS_PATH = 'spacer.extractors.base.DummyExtractor'

    def __init__(self, data_locations: Mapping[str, DataLocation] | None = None,
                 feature_dim: int = 4096, **kwargs: Any):
        super().__init__(data_locations or {}, **kwargs)
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) \
                or feature_dim < 1:
            raise MessageError(f'DummyExtractor.feature_dim = '
                               f'{show(feature_dim)}: expected a positive int.')
        self._feature_dim = feature_dim

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def __call__(self, im: Any, rowcols: Sequence[tuple[int, int]]
                 ) -> tuple[ImageFeatures, ExtractFeaturesReturnMsg]:
        try:
            import numpy as np
        except ImportError:
            feat: Any = [[random.random() for _ in range(self._feature_dim)]
                         for _ in rowcols]
        else:
            feat = np.random.default_rng().random(
                (len(rowcols), self._feature_dim), dtype=np.float32)
        features = ImageFeatures.from_arrays(
            [r for r, _ in rowcols], [c for _, c in rowcols], feat)
        return features, ExtractFeaturesReturnMsg.example()

    def serialize(self) -> dict:
        data = super().serialize()
        data['feature_dim'] = self._feature_dim
        return data


def extractor_class(class_path: Any) -> type[FeatureExtractor]:
    """The allowlisted extractor class for a class path."""
    return resolve_class(class_path, kind='Extractor', builtins=_BUILTINS,
                         setting='EXTRA_EXTRACTOR_CLASSES',
                         base=FeatureExtractor)


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'PointFeatures': 'spacer_worker.data_classes:PointFeatures',
    'ConfigError': 'spacer_worker.exceptions:ConfigError',
    'crop_patches': 'spacer_worker.extractors.utils:crop_patches',
    'ExtractFeaturesReturnMsg': 'spacer_worker.messages:ExtractFeaturesReturnMsg',
    'storage_factory': 'spacer_worker.storage.factory:storage_factory',
}, globals())
