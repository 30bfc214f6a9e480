"""Results: PySpacer's ValResults and what each task answers (the return
messages).

They depend only on the codec and the base data classes, so the parts that
build them (extractors, trainers, task bodies) import them at module level.
Import the return messages from :mod:`spacer_worker.messages` and
ValResults from :mod:`spacer_worker.data_classes`, PySpacer's paths.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spacer_worker.data_classes.base import COL, ROW, DataClass, LabelId
from spacer_worker.data_classes.codec import (
    BOOL,
    FLOATS,
    LABEL_ID,
    NUMBER,
    Invalid,
    ListOf,
    Optional,
    Scalar,
    TupleOf,
    field,
    relabel,
)
from spacer_worker.exceptions import MessageError, SpacerError

__all__ = ['ClassifyReturnMsg', 'ExtractFeaturesReturnMsg',
           'TrainClassifierReturnMsg', 'ValResults']

INDEX = Scalar(int, name='an integer')


@dataclasses.dataclass(eq=False)
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


@dataclasses.dataclass(eq=False)
class ExtractFeaturesReturnMsg(DataClass):
    extractor_loaded_remotely: bool = field(BOOL)
    runtime: float = field(NUMBER)

    @classmethod
    def example(cls) -> ExtractFeaturesReturnMsg:
        return cls(extractor_loaded_remotely=True, runtime=2.1)


@dataclasses.dataclass(eq=False)
class TrainClassifierReturnMsg(DataClass):
    acc: float = field(NUMBER)
    pc_accs: list[float] = field(FLOATS)
    ref_accs: list[float] = field(FLOATS)
    runtime: float = field(NUMBER)

    @classmethod
    def example(cls) -> TrainClassifierReturnMsg:
        return cls(acc=0.7, pc_accs=[0.4, 0.5, 0.6],
                   ref_accs=[0.55, 0.65, 0.64, 0.67, 0.70], runtime=123.4)


@dataclasses.dataclass(eq=False)
class ClassifyReturnMsg(DataClass):
    """Scores per point: ``(row, col, [score per class])``, where score
    ``i`` is for ``classes[i]``."""

    runtime: float = field(NUMBER)
    scores: list[tuple[int | None, int | None, list[float]]] = field(_Scores())
    classes: list[LabelId] = field(ListOf(LABEL_ID, what='label ids'))
    valid_rowcol: bool = field(BOOL)

    @classmethod
    def from_arrays(cls, runtime: float, rows: Any, cols: Any, scores: Any,
                    classes: Any, valid_rowcol: bool) -> ClassifyReturnMsg:
        """The message for scores a worker computed: ``scores`` a float
        matrix (a row per point, a column per class), ``rows``/``cols``
        integer arrays (None where not ``valid_rowcol``). Checked as arrays
        (finite floats, non-negative integer positions, one per point)
        rather than value by value: the constructor's guarantees, and
        finiteness, for a 200 x 20 result in a fraction of the time."""
        import numpy as np  # lazy: the client side has no numpy

        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.dtype.kind != 'f' or \
                not np.isfinite(scores).all():
            raise MessageError(
                f'ClassifyReturnMsg.scores: expected a finite float matrix, '
                f'got {scores.dtype} {scores.shape}.')
        count = len(scores)
        if valid_rowcol:
            rows, cols = np.asarray(rows), np.asarray(cols)
            if rows.shape != (count,) or cols.shape != (count,) or \
                    rows.dtype.kind not in 'iu' or cols.dtype.kind not in 'iu' \
                    or (count and min(rows.min(), cols.min()) < 0):
                raise MessageError(
                    f'ClassifyReturnMsg.scores: {count} points need as many '
                    f'non-negative integer rows and columns.')
            rows, cols = rows.tolist(), cols.tolist()
        else:
            rows = cols = [None] * count
        message = cls.__new__(cls)
        values: dict[str, Any] = {}
        for spec in cls._specs():
            if spec.name == 'scores':
                value = list(zip(rows, cols, scores.tolist(), strict=True))
            else:
                given = {'runtime': runtime, 'classes': classes,
                         'valid_rowcol': valid_rowcol}[spec.name]
                try:
                    value = spec.codec_for(values).convert(given)
                except (Invalid, SpacerError, TypeError, ValueError) as e:
                    raise relabel(e, f'{cls.__name__}.{spec.name}',
                                  given) from e
            values[spec.name] = value
            object.__setattr__(message, spec.name, value)
        message.validate()
        return message

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
