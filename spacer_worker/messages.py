"""PySpacer's task messages, with PySpacer 0.14.0's JSON shapes.

Every message is a :class:`spacer_worker.codec.Message` dataclass: it
validates in its constructor (typed errors naming field and value),
``serialize()`` gives PySpacer's dict and ``deserialize()`` reads it. An
extractor or trainer inside a message is a description (class path,
locations, parameters), so all of this runs on a client without torch,
scikit-learn or numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacer_worker.codec import (
    BOOL,
    FLOATS,
    INT,
    LABEL_ID,
    NUMBER,
    OPT_STR,
    STR,
    Choice,
    Codec,
    Invalid,
    ListOf,
    Message,
    Nested,
    Optional,
    TupleOf,
    field,
    show,
)
from spacer_worker.data_classes import (
    COL,
    LOCATION,
    ROW,
    ROWCOLS,
    DataLocation,
    ImageLabels,
    LabelId,
)
from spacer_worker.exceptions import MessageError, StorageReadOnlyError

if TYPE_CHECKING:
    from spacer_worker.extractors.base import FeatureExtractor
    from spacer_worker.train_classifier import ClassifierTrainer

__all__ = [
    'ClassifierType', 'ClassifyFeaturesMsg', 'ClassifyImageMsg',
    'ClassifyReturnMsg', 'DataLocation', 'ExtractFeaturesMsg',
    'ExtractFeaturesReturnMsg', 'FeatureCache', 'ImageLabels', 'JobMsg',
    'JobReturnMsg', 'TaskName', 'TrainClassifierMsg',
    'TrainClassifierReturnMsg', 'TrainingTaskLabels',
]


class TaskName(StrEnum):
    EXTRACT_FEATURES = 'extract_features'
    TRAIN_CLASSIFIER = 'train_classifier'
    CLASSIFY_FEATURES = 'classify_features'
    CLASSIFY_IMAGE = 'classify_image'


class ClassifierType(StrEnum):
    LR = 'LR'
    MLP = 'MLP'


class FeatureCache(StrEnum):
    """Where training caches remotely loaded features: AUTO (a temporary
    directory the OS picks), DISABLED, or else a directory path (str)."""
    AUTO = 'auto'
    DISABLED = 'disabled'


# --- codecs for the descriptions (imported lazily: they import us) --------

class _ExtractorCodec(Codec):
    def convert(self, value: Any) -> Any:
        from spacer_worker.extractors.base import FeatureExtractor
        if not isinstance(value, FeatureExtractor):
            raise Invalid(f'expected a FeatureExtractor, got {show(value)} '
                          f'({type(value).__name__})')
        return value

    def encode(self, value: Any) -> dict:
        return value.serialize()

    def decode(self, data: Any) -> Any:
        from spacer_worker.extractors.base import FeatureExtractor
        return FeatureExtractor.deserialize(data)


class _TrainerCodec(Codec):
    """A ClassifierTrainer; a name ('minibatch') or a class path resolves
    through trainer_factory, as in PySpacer (also the legacy key
    'trainer_name')."""

    def convert(self, value: Any) -> Any:
        from spacer_worker.train_classifier import ClassifierTrainer, trainer_factory
        if isinstance(value, str):
            return trainer_factory(value)
        if not isinstance(value, ClassifierTrainer):
            raise Invalid(f'expected a ClassifierTrainer or a trainer name, '
                          f'got {show(value)} ({type(value).__name__})')
        return value

    def encode(self, value: Any) -> dict:
        return value.serialize()

    def decode(self, data: Any) -> Any:
        from spacer_worker.train_classifier import ClassifierTrainer
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
SCORE = TupleOf(Optional(ROW), Optional(COL), FLOATS,
                what='(row, col, scores) triple')


class _Scores(ListOf):
    """ClassifyReturnMsg.scores: one (row, col, [score per class]) per
    point; well-formed input takes a tight loop (1000 points x classes)."""

    _PLAIN = frozenset((float, int))

    def __init__(self) -> None:
        super().__init__(SCORE, what='(row, col, scores) triples')

    def convert(self, value: Any) -> list:
        self._check(value)
        out = []
        plain = self._PLAIN
        for item in value:
            if (type(item) is tuple or type(item) is list) and len(item) == 3:
                row, col, scores = item
                if ((row is None or type(row) is int and row >= 0)
                        and (col is None or type(col) is int and col >= 0)
                        and type(scores) is list
                        and set(map(type, scores)) <= plain):
                    out.append((row, col, list(scores)))
                    continue
            return super().convert(value)
        return out

    def decode(self, data: Any) -> list:
        return self.convert(data)


def _writable(msg: Message, *names: str) -> None:
    for name in names:
        loc = getattr(msg, name)
        if not loc.is_writable:
            raise StorageReadOnlyError(
                f'{type(msg).__name__}.{name} = {loc!r}: cannot write to '
                f"'{loc.storage_type}' storage (read-only); use "
                f'filesystem, s3 or memory.')


# --- extract_features ------------------------------------------------------

@dataclasses.dataclass(eq=True)
class ExtractFeaturesMsg(Message):
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
        from spacer_worker.extractors import EfficientNetExtractor
        return cls(
            job_token='123abc',
            extractor=EfficientNetExtractor(data_locations={
                'weights': DataLocation('filesystem', '/path/to/weights.pt')}),
            rowcols=[(100, 100)],
            image_loc=DataLocation('memory', 'my_image.jpg'),
            feature_loc=DataLocation('memory', 'my_feats.json'))


@dataclasses.dataclass(eq=True)
class ExtractFeaturesReturnMsg(Message):
    extractor_loaded_remotely: bool = field(BOOL)
    runtime: float = field(NUMBER)

    @classmethod
    def example(cls) -> ExtractFeaturesReturnMsg:
        return cls(extractor_loaded_remotely=True, runtime=2.1)


# --- train_classifier ------------------------------------------------------

LABELS = Nested(ImageLabels)
_SETS = ('train', 'ref', 'val')


@dataclasses.dataclass(eq=True)
class TrainingTaskLabels(Message):
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
        setattr(self, item, value)  # checked by Message.__setattr__

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


@dataclasses.dataclass(eq=True)
class TrainClassifierMsg(Message):
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

    @classmethod
    def example(cls) -> TrainClassifierMsg:
        return cls(
            job_token='123_abc', trainer='minibatch', nbr_epochs=2,
            clf_type='MLP', labels=TrainingTaskLabels.example(),
            previous_model_locs=[DataLocation('memory', 'previous_model1.pkl'),
                                 DataLocation('memory', 'previous_model2.pkl')],
            model_loc=DataLocation('memory', 'my_new_model.pkl'),
            valresult_loc=DataLocation('memory', 'my_valresult.json'))


@dataclasses.dataclass(eq=True)
class TrainClassifierReturnMsg(Message):
    acc: float = field(NUMBER)
    pc_accs: list[float] = field(FLOATS)
    ref_accs: list[float] = field(FLOATS)
    runtime: float = field(NUMBER)

    @classmethod
    def example(cls) -> TrainClassifierReturnMsg:
        return cls(acc=0.7, pc_accs=[0.4, 0.5, 0.6],
                   ref_accs=[0.55, 0.65, 0.64, 0.67, 0.70], runtime=123.4)


# --- classify ----------------------------------------------------------------

_EXAMPLE_URL = 'https://my-bucket.s3-my-region.amazonaws.com/'


@dataclasses.dataclass(eq=True)
class ClassifyFeaturesMsg(Message):
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


@dataclasses.dataclass(eq=True)
class ClassifyImageMsg(Message):
    job_token: str = field(STR)
    extractor: FeatureExtractor = field(EXTRACTOR)
    rowcols: list[tuple[int, int]] = field(ROWCOLS)
    image_loc: DataLocation = field(LOCATION)
    classifier_loc: DataLocation = field(LOCATION)

    @classmethod
    def example(cls) -> ClassifyImageMsg:
        from spacer_worker.extractors import EfficientNetExtractor
        return cls(
            job_token='my_job',
            extractor=EfficientNetExtractor(data_locations={
                'weights': DataLocation('filesystem', '/path/to/weights.pt')}),
            rowcols=[(1, 1), (2, 2)],
            image_loc=DataLocation('url', _EXAMPLE_URL + '01234aeiou.png'),
            classifier_loc=DataLocation('url', _EXAMPLE_URL + 'my_model_id.model'))


@dataclasses.dataclass(eq=True)
class ClassifyReturnMsg(Message):
    """Scores per point: ``(row, col, [score per class])``, where score
    ``i`` is for ``classes[i]``."""

    runtime: float = field(NUMBER)
    scores: list[tuple[int | None, int | None, list[float]]] = field(_Scores())
    classes: list[LabelId] = field(ListOf(LABEL_ID, what='label ids'))
    valid_rowcol: bool = field(BOOL)

    def __getitem__(self, rowcol: tuple[int, int]) -> list[float]:
        """The scores at (row, col)."""
        if not self.valid_rowcol:
            raise ValueError('Method requires valid rows and columns')
        for row, col, scores in self.scores:
            if (row, col) == tuple(rowcol):
                return scores
        raise KeyError(rowcol)

    @classmethod
    def example(cls) -> ClassifyReturnMsg:
        return cls(runtime=1.1,
                   scores=[(10, 20, [0.1, 0.2, 0.7]), (20, 40, [0.9, 0.06, 0.04])],
                   classes=[100, 12, 44], valid_rowcol=True)


# --- jobs --------------------------------------------------------------------

TASK_MESSAGES: dict[TaskName, type[Message]] = {
    TaskName.EXTRACT_FEATURES: ExtractFeaturesMsg,
    TaskName.TRAIN_CLASSIFIER: TrainClassifierMsg,
    TaskName.CLASSIFY_FEATURES: ClassifyFeaturesMsg,
    TaskName.CLASSIFY_IMAGE: ClassifyImageMsg,
}

RETURN_MESSAGES: dict[TaskName, type[Message]] = {
    TaskName.EXTRACT_FEATURES: ExtractFeaturesReturnMsg,
    TaskName.TRAIN_CLASSIFIER: TrainClassifierReturnMsg,
    TaskName.CLASSIFY_FEATURES: ClassifyReturnMsg,
    TaskName.CLASSIFY_IMAGE: ClassifyReturnMsg,
}

TaskMsg = ExtractFeaturesMsg | TrainClassifierMsg | ClassifyFeaturesMsg | ClassifyImageMsg
ReturnMsg = ExtractFeaturesReturnMsg | TrainClassifierReturnMsg | ClassifyReturnMsg


def _tasks_codec(values: Mapping[str, Any]) -> Codec:
    return ListOf(Nested(TASK_MESSAGES[values['task_name']]), what='task messages')


def _results_codec(values: Mapping[str, Any]) -> Codec:
    if not values['ok']:
        # A failed job carries whatever PySpacer put there (None).
        return Codec()
    task_name = values['original_job'].task_name
    return ListOf(Nested(RETURN_MESSAGES[task_name]), what='return messages')


@dataclasses.dataclass(eq=True)
class JobMsg(Message):
    """Several tasks of one kind, run in order by process_job."""

    task_name: str = field(Choice(TaskName))
    tasks: list[TaskMsg] = field(_tasks_codec)

    @classmethod
    def example(cls) -> JobMsg:
        return cls(task_name='classify_image', tasks=[ClassifyImageMsg.example()])


@dataclasses.dataclass(eq=True)
class JobReturnMsg(Message):
    """process_job's answer: ``results`` (one per task) when ``ok``, else
    ``error_message`` (the traceback text)."""

    original_job: JobMsg = field(Nested(JobMsg))
    ok: bool = field(BOOL)
    results: list[ReturnMsg] | None = field(_results_codec)
    error_message: str | None = field(OPT_STR)

    @classmethod
    def example(cls) -> JobReturnMsg:
        return cls(original_job=JobMsg.example(), ok=True,
                   results=[ClassifyReturnMsg.example()], error_message=None)


