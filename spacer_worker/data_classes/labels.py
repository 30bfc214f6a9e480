"""PySpacer's ImageLabels (the annotated points of each image) and
TrainingTaskLabels (the train, ref and val sets a training message
carries)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Generator, Iterable

from spacer_worker.data_classes.base import (
    ANNOTATIONS,
    LOCATION,
    Annotation,
    DataClass,
    DataLocation,
    FeatureLabelBatch,
    LabelId,
)
from spacer_worker.data_classes.codec import (
    DictOf,
    Encoded,
    Invalid,
    JsonText,
    Nested,
    field,
    relabel,
    show,
)
from spacer_worker.data_classes.features import ImageFeatures
from spacer_worker.exceptions import (
    MessageError,
    RowColumnMismatchError,
    RowColumnMissingError,
    SpacerError,
)


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
            features = ImageFeatures.read(loc, self.filesystem_cache)
            try:
                pairs = list(features.match_with_annotations(self._data[loc]))
            except RowColumnMissingError as e:
                raise RowColumnMissingError(
                    f'{loc.key}: Features without rowcols are no longer '
                    f'supported for training.') from e
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


LABELS = Nested(ImageLabels)
_SETS = ('train', 'ref', 'val')


@dataclasses.dataclass(eq=False)
class TrainingTaskLabels(DataClass):
    """Training (train), reference (ref: per-epoch accuracy, calibration)
    and validation (val) annotations; see task_utils.preprocess_labels."""

    train: ImageLabels = field(LABELS)
    ref: ImageLabels = field(LABELS)
    val: ImageLabels = field(LABELS)

    def __getitem__(self, item: str) -> ImageLabels:
        if item not in _SETS:
            raise KeyError(item)
        return getattr(self, item)

    def __setitem__(self, item: str, value: ImageLabels) -> None:
        if item not in _SETS:
            raise KeyError(item)
        setattr(self, item, value)  # a bad value fails at check()

    @property
    def label_count(self) -> int:
        return sum(self[s].label_count for s in _SETS)

    @property
    def has_remote_data(self) -> bool:
        return any(self[s].has_remote_data for s in _SETS)

    def set_filesystem_cache(self, dir_path: str | None) -> None:
        for s in _SETS:
            self[s].set_filesystem_cache(dir_path)

    @classmethod
    def example(cls) -> TrainingTaskLabels:
        return cls(train=ImageLabels.example(), ref=ImageLabels.example(),
                   val=ImageLabels.example())
