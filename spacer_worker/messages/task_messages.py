"""What a client sends: PySpacer's task messages, in PySpacer 0.14.0's
JSON shapes.

Every message is a :class:`spacer_worker.data_classes.DataClass`: it
validates in its constructor (typed errors naming field and value),
``serialize()`` gives PySpacer's dict and ``deserialize()`` reads it. An
extractor or trainer inside a message is a description (class path,
locations, parameters), so all of this runs on a client without torch,
scikit-learn or numpy. Import them from :mod:`spacer_worker.messages`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spacer_worker.constants import ClassifierType, FeatureCache
from spacer_worker.data_classes import (
    LOCATION,
    ROWCOLS,
    DataClass,
    DataLocation,
    TrainingTaskLabels,
)
from spacer_worker.data_classes.codec import (
    INT,
    STR,
    Choice,
    Codec,
    Invalid,
    ListOf,
    Nested,
    field,
    show,
)
from spacer_worker.exceptions import MessageError, StorageReadOnlyError
from spacer_worker.extractors import EfficientNetExtractor, FeatureExtractor
from spacer_worker.train_classifier import (
    ClassifierTrainer,
    trainer_factory,
    trainer_name_of,
)

__all__ = [
    'ClassifyFeaturesMsg', 'ClassifyImageMsg', 'ExtractFeaturesMsg',
    'TrainClassifierMsg', 'TrainingTaskLabels',
]


# --- codecs for the descriptions --------------------------------------------

class _ExtractorCodec(Codec):
    def convert(self, value: Any) -> Any:
        if not isinstance(value, FeatureExtractor):
            raise Invalid(f'expected a FeatureExtractor, got {show(value)} '
                          f'({type(value).__name__})')
        return value

    def encode(self, value: Any) -> dict:
        return value.serialize()

    def decode(self, data: Any) -> Any:
        return FeatureExtractor.deserialize(data)


class _TrainerCodec(Codec):
    """A ClassifierTrainer; a name ('minibatch') or a class path resolves
    through trainer_factory, as in PySpacer (also the legacy key
    'trainer_name')."""

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            return trainer_factory(value)
        if not isinstance(value, ClassifierTrainer):
            raise Invalid(f'expected a ClassifierTrainer or a trainer name, '
                          f'got {show(value)} ({type(value).__name__})')
        return value

    def encode(self, value: Any) -> dict:
        return value.serialize()

    def decode(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            return ClassifierTrainer.deserialize(data)
        return self.convert(data)


class _FeatureCacheCodec(Codec):
    def convert(self, value: Any) -> Any:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise Invalid(f"expected FeatureCache.AUTO, FeatureCache.DISABLED "
                          f"or a directory path, got {show(value)} "
                          f"({type(value).__name__})")
        try:
            return FeatureCache(value)
        except ValueError:
            return value

    def encode(self, value: Any) -> str:
        return str(value)


EXTRACTOR = _ExtractorCodec()
TRAINER = _TrainerCodec()
LOCATIONS = ListOf(LOCATION, what='DataLocations')

def _writable(msg: DataClass, *names: str) -> None:
    for name in names:
        loc = getattr(msg, name)
        if not loc.is_writable:
            raise StorageReadOnlyError(
                f'{type(msg).__name__}.{name} = {loc!r}: cannot write to '
                f"'{loc.storage_type}' storage (read-only); use "
                f'filesystem, s3 or memory.')


# --- extract_features ------------------------------------------------------

@dataclasses.dataclass(eq=False)
class ExtractFeaturesMsg(DataClass):
    """Extract features of ``image_loc`` at ``rowcols`` into ``feature_loc``."""

    job_token: str = field(STR)
    extractor: FeatureExtractor = field(EXTRACTOR)
    rowcols: list[tuple[int, int]] = field(ROWCOLS)
    image_loc: DataLocation = field(LOCATION)
    feature_loc: DataLocation = field(LOCATION)

    def validate(self) -> None:
        _writable(self, 'feature_loc')

    @classmethod
    def example(cls) -> ExtractFeaturesMsg:
        return cls(
            job_token='123abc',
            extractor=EfficientNetExtractor(data_locations={
                'weights': DataLocation('filesystem', '/path/to/weights.pt')}),
            rowcols=[(100, 100)],
            image_loc=DataLocation('memory', 'my_image.jpg'),
            feature_loc=DataLocation('memory', 'my_feats.json'))


# --- train_classifier ------------------------------------------------------

@dataclasses.dataclass(eq=False)
class TrainClassifierMsg(DataClass):
    """Train a ``clf_type`` classifier on ``labels`` for ``nbr_epochs``,
    store it at ``model_loc`` and its validation results at
    ``valresult_loc``; ``previous_model_locs`` are evaluated for
    comparison. ``trainer`` is a ClassifierTrainer or a name
    ('minibatch')."""

    FeatureCache = FeatureCache

    job_token: str = field(STR)
    trainer: ClassifierTrainer = field(TRAINER, aliases=('trainer_name',))
    nbr_epochs: int = field(INT)
    clf_type: str = field(Choice(ClassifierType))
    labels: TrainingTaskLabels = field(Nested(TrainingTaskLabels))
    previous_model_locs: list[DataLocation] = field(LOCATIONS)
    model_loc: DataLocation = field(LOCATION)
    valresult_loc: DataLocation = field(LOCATION)
    feature_cache_dir: str = field(_FeatureCacheCodec(),
                                   default=FeatureCache.AUTO)

    def validate(self) -> None:
        if self.nbr_epochs < 1:
            raise MessageError(
                f'TrainClassifierMsg.nbr_epochs = {self.nbr_epochs!r}: '
                f'needs at least 1 epoch.')
        _writable(self, 'model_loc', 'valresult_loc')

    # PySpacer 0.13 names the trainer by ``trainer_name`` (constructor
    # argument, attribute and JSON key); a message that came that way
    # serializes that way, so a 0.13 reader can read its original_job.
    _trainer_name: str | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False)

    @property
    def trainer_name(self) -> str | None:
        """PySpacer 0.13's name of the trainer ('minibatch'), when it is a
        built-in trainer with default parameters."""
        if self._trainer_name is not None:
            return self._trainer_name
        return trainer_name_of(self.trainer)

    @trainer_name.setter
    def trainer_name(self, name: str) -> None:
        self.trainer = name
        object.__setattr__(self, '_trainer_name', name)

    def serialize(self) -> dict:
        data = super().serialize()
        name = self._trainer_name
        if name is None or trainer_name_of(self.trainer) != name:
            return data
        # The legacy key in the same place as 'trainer'.
        return {('trainer_name' if k == 'trainer' else k):
                (name if k == 'trainer' else v) for k, v in data.items()}

    @classmethod
    def deserialize(cls, data: Any) -> TrainClassifierMsg:
        msg = super().deserialize(data)
        if isinstance(data, Mapping) and isinstance(data.get('trainer_name'),
                                                    str):
            object.__setattr__(msg, '_trainer_name', data['trainer_name'])
        return msg

    @classmethod
    def example(cls) -> TrainClassifierMsg:
        return cls(
            job_token='123_abc', trainer='minibatch', nbr_epochs=2,
            clf_type='MLP', labels=TrainingTaskLabels.example(),
            previous_model_locs=[DataLocation('memory', 'previous_model1.pkl'),
                                 DataLocation('memory', 'previous_model2.pkl')],
            model_loc=DataLocation('memory', 'my_new_model.pkl'),
            valresult_loc=DataLocation('memory', 'my_valresult.json'))


def _accepts_trainer_name(init: Any) -> Any:
    """PySpacer 0.13's constructor took ``trainer_name='minibatch'``
    where 0.14 takes ``trainer``: accept either, not both."""

    def __init__(self: TrainClassifierMsg, *args: Any,
                 trainer_name: Any = None, **kwargs: Any) -> None:
        if trainer_name is not None:
            if 'trainer' in kwargs or len(args) > 1:
                raise MessageError(
                    'TrainClassifierMsg: trainer and trainer_name both '
                    'given; they mean the same field, give one.')
            kwargs['trainer'] = trainer_name
        init(self, *args, **kwargs)
        if isinstance(trainer_name, str):
            object.__setattr__(self, '_trainer_name', trainer_name)

    __init__.__doc__ = init.__doc__
    __init__.__wrapped__ = init  # type: ignore[attr-defined]
    return __init__


TrainClassifierMsg.__init__ = _accepts_trainer_name(  # type: ignore[method-assign]
    TrainClassifierMsg.__init__)


# --- classify ----------------------------------------------------------------

_EXAMPLE_URL = 'https://my-bucket.s3-my-region.amazonaws.com/'


@dataclasses.dataclass(eq=False)
class ClassifyFeaturesMsg(DataClass):
    job_token: str = field(STR)
    feature_loc: DataLocation = field(LOCATION)
    classifier_loc: DataLocation = field(LOCATION)

    @classmethod
    def example(cls) -> ClassifyFeaturesMsg:
        return cls(
            job_token='my_job',
            feature_loc=DataLocation(
                'url', _EXAMPLE_URL + '01234aeiou.png.featurevector'),
            classifier_loc=DataLocation('url', _EXAMPLE_URL + 'my_model_id.model'))


@dataclasses.dataclass(eq=False)
class ClassifyImageMsg(DataClass):
    job_token: str = field(STR)
    extractor: FeatureExtractor = field(EXTRACTOR)
    rowcols: list[tuple[int, int]] = field(ROWCOLS)
    image_loc: DataLocation = field(LOCATION)
    classifier_loc: DataLocation = field(LOCATION)

    @classmethod
    def example(cls) -> ClassifyImageMsg:
        return cls(
            job_token='my_job',
            extractor=EfficientNetExtractor(data_locations={
                'weights': DataLocation('filesystem', '/path/to/weights.pt')}),
            rowcols=[(1, 1), (2, 2)],
            image_loc=DataLocation('url', _EXAMPLE_URL + '01234aeiou.png'),
            classifier_loc=DataLocation('url', _EXAMPLE_URL + 'my_model_id.model'))
