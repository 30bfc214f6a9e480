"""Classifier trainer descriptions and the trainer allowlist.

A trainer in a TrainClassifierMsg is a class path plus its non-default
parameters, as PySpacer serializes it; it builds without scikit-learn.
Calling one (worker only) runs :mod:`spacer_worker.training`.

Deserializing instantiates only allowlisted classes: MiniBatchTrainer
(under PySpacer's or our path) and the class paths in the
``EXTRA_TRAINER_CLASSES`` setting; anything else raises UnknownClassError
without importing it.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spacer_worker import config
from spacer_worker.constants import FeatureCache, TrainerName
from spacer_worker.data_classes.codec import (
    BOOL,
    INT,
    STR,
    Codec,
    Description,
    Invalid,
    Optional,
    Scalar,
    TupleOf,
    resolve_class,
    show,
)
from spacer_worker.exceptions import MessageError, UnknownClassError

if TYPE_CHECKING:
    from spacer_worker.data_classes import TrainingTaskLabels, ValResults
    from spacer_worker.data_classes.results import TrainClassifierReturnMsg

ProgressCallback = Callable[..., None]

BUILTIN_TRAINERS: dict[str, str] = {
    TrainerName.MINIBATCH: 'spacer.train_classifier.MiniBatchTrainer',
}


class ClassifierTrainer(Description, abc.ABC):
    """Base of trainer descriptions (PySpacer's extension point)."""

    @abc.abstractmethod
    def __call__(self, labels: TrainingTaskLabels, nbr_epochs: int,
                 pc_models: list[Any], clf_type: str,
                 feature_loc: Any = None,
                 progress: ProgressCallback | None = None,
                 ) -> tuple[Any, ValResults, TrainClassifierReturnMsg]:
        """Train; return (CalibratedClassifierCV, ValResults, return msg).

        PySpacer's four arguments come first. ``feature_loc`` is the
        message's feature_cache_dir; ``progress(epoch=, nbr_epochs=,
        ref_acc=)`` is called after each epoch. A trainer written for
        PySpacer may take only the first four; the task layer passes the
        others only to trainers that accept them."""

    @staticmethod
    def deserialize(data: Any) -> ClassifierTrainer:
        """Rebuild an allowlisted trainer; other keys are its parameters."""
        class_path, kwargs = Description.split_class_path(
            data, 'ClassifierTrainer')
        return Description.build(trainer_class(class_path), kwargs, data)


class _PositiveInt(Scalar):
    def __init__(self) -> None:
        super().__init__(int, name='a positive integer')

    def convert(self, value: Any) -> int:
        value = super().convert(value)
        if value < 1:
            raise Invalid(f'expected a positive integer, got {value}')
        return value


class _LayerSizes(Codec):
    """MLP hidden layer sizes: a non-empty sequence of positive ints; kept
    as a tuple (JSON gives a list)."""

    def convert(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise Invalid(f'expected a non-empty list of layer sizes, got '
                          f'{show(value)}')
        return TupleOf(*[_POSITIVE] * len(value),
                       what='list of layer sizes').convert(value)

    def encode(self, value: Any) -> list[int]:
        return list(value)


_POSITIVE = _PositiveInt()
_RATE = Scalar(float, int, name='a number')

# Parameter name -> codec; defaults are MiniBatchTrainer.__init__'s.
_MINIBATCH_PARAMS: dict[str, Codec] = {
    'batch_size': _POSITIVE,
    'mlp_hidden_layer_sizes': Optional(_LayerSizes()),
    'mlp_learning_rate_init': Optional(_RATE),
    'mlp_large_data_threshold': _POSITIVE,
    'sgd_loss': STR,
    'sgd_average': BOOL,
    'sgd_random_state': Optional(INT),
}


class MiniBatchTrainer(ClassifierTrainer):
    """PySpacer's default trainer: SGD (LR) or MLP fitted on mini-batches
    with partial_fit, one pass over the training set per epoch, then
    calibrated on the reference set.

    ``batch_size`` defaults to the TRAINING_BATCH_LABEL_COUNT setting, read
    when the trainer is made (PySpacer reads it at import).
    """

    PYSPACER_CLASS_PATH = 'spacer.train_classifier.MiniBatchTrainer'

    def __init__(self, batch_size: int | None = None,
                 mlp_hidden_layer_sizes: tuple[int, ...] | None = None,
                 mlp_learning_rate_init: float | None = None,
                 mlp_large_data_threshold: int = 50000,
                 sgd_loss: str = 'log_loss',
                 sgd_average: bool = True,
                 sgd_random_state: int | None = 0):
        if batch_size is None:
            batch_size = _default_batch_size()
        given = dict(locals())
        for name, codec in _MINIBATCH_PARAMS.items():
            try:
                setattr(self, name, codec.convert(given[name]))
            except Invalid as e:
                raise e.error_type(
                    f'MiniBatchTrainer.{name} = {show(given[name])}: '
                    f'{e.reason}') from e

    def serialize(self) -> dict:
        """class_path plus the parameters that differ from their defaults
        (PySpacer's shape)."""
        data = super().serialize()
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()
                    if name in _MINIBATCH_PARAMS}
        defaults['batch_size'] = _default_batch_size()
        for name, codec in _MINIBATCH_PARAMS.items():
            value = getattr(self, name)
            if value != defaults[name]:
                data[name] = codec.encode(value)
        return data

    def __call__(self, labels: TrainingTaskLabels, nbr_epochs: int,
                 pc_models: list[Any], clf_type: str,
                 feature_loc: Any = None,
                 progress: ProgressCallback | None = None,
                 ) -> tuple[Any, ValResults, TrainClassifierReturnMsg]:
        # scikit-learn loads only when a worker trains.
        from spacer_worker.training.minibatch import train_minibatch
        if feature_loc is None:
            feature_loc = FeatureCache.AUTO
        return train_minibatch(self, labels, nbr_epochs, pc_models,
                               feature_loc, clf_type, progress)


    def _train(self, train_labels: Any, ref_labels: Any, nbr_epochs: int,
               clf_type: str) -> tuple[Any, list[float]]:
        """PySpacer's step before evaluation: the calibrated classifier
        fitted on ``train_labels`` and the reference accuracy per epoch."""
        from spacer_worker.training.minibatch import fit_sets
        return fit_sets(self, train_labels, ref_labels, nbr_epochs, clf_type)


def _default_batch_size() -> int:
    return config.get('TRAINING_BATCH_LABEL_COUNT')


_BUILTIN_CLASSES: dict[str, type[ClassifierTrainer]] = {
    'spacer.train_classifier.MiniBatchTrainer': MiniBatchTrainer,
    'spacer_worker.train_classifier.MiniBatchTrainer': MiniBatchTrainer,
}


def trainer_class(class_path: Any) -> type[ClassifierTrainer]:
    """The allowlisted trainer class for a class path."""
    return resolve_class(class_path, kind='Trainer', builtins=_BUILTIN_CLASSES,
                         setting='EXTRA_TRAINER_CLASSES', base=ClassifierTrainer)


def trainer_factory(trainer_name: str) -> ClassifierTrainer:
    """A trainer from a built-in name ('minibatch') or an allowed class path,
    with default parameters."""
    if not isinstance(trainer_name, str):
        raise MessageError(f'trainer name must be a string, got '
                           f'{show(trainer_name)}.')
    class_path = BUILTIN_TRAINERS.get(trainer_name, trainer_name)
    if '.' not in class_path:
        raise UnknownClassError(
            f'Unknown trainer name {trainer_name!r}; built-in names: '
            f'{", ".join(BUILTIN_TRAINERS)} (or give an allowed class path).')
    return ClassifierTrainer.deserialize({'class_path': class_path})


def trainer_name_of(trainer: Any) -> str | None:
    """The built-in name ('minibatch') that makes ``trainer``, if one does:
    a built-in class with default parameters."""
    if not isinstance(trainer, ClassifierTrainer):
        return None
    described = trainer.serialize()
    for name, class_path in BUILTIN_TRAINERS.items():
        if described == {'class_path': class_path}:
            return name
    return None


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'ValResults': 'spacer_worker.data_classes:ValResults',
    'TrainClassifierReturnMsg': 'spacer_worker.messages:TrainClassifierReturnMsg',
    'TrainingTaskLabels': 'spacer_worker.messages:TrainingTaskLabels',
    'evaluate_classifier': 'spacer_worker.train_utils:evaluate_classifier',
    'calc_acc': 'spacer_worker.train_utils:calc_acc',
}, globals())
