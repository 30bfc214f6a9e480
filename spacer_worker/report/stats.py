"""The numbers of a training report, computed once from a ValResults.

Figures, the HTML page and ``report.json`` all read these, so what a
person sees in a picture is the number printed beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Confidence thresholds of the table on the page (the curve uses 0.00-1.00).
TABLE_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CURVE_STEPS = 101


@dataclass(frozen=True)
class ClassRow:
    """One class: its validation points and how many were classified right."""

    label: str          # the label id, as text
    name: str           # what a person reads: the label's name, else its id
    support: int
    correct: int
    predicted: int      # points the classifier gave this class

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.support if self.support else None


@dataclass(frozen=True)
class ThresholdRow:
    """Points whose confidence is at least ``threshold``."""

    threshold: float
    coverage: float             # share of all points kept
    kept: int
    accuracy: float | None      # among the kept points (None: none kept)


@dataclass(frozen=True)
class ReportStats:
    count: int
    accuracy: float
    classes: list[ClassRow]
    confusion: list[list[int]]              # [true class][estimated class]
    curve: list[ThresholdRow]
    table: list[ThresholdRow]
    ref_accs: list[float] = field(default_factory=list)
    pc_accs: list[float] = field(default_factory=list)
    new_acc: float | None = None            # TrainClassifierReturnMsg.acc
    runtime: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for row, source in zip(data['classes'], self.classes, strict=True):
            row['accuracy'] = source.accuracy
        return data


def display_names(classes: Sequence[Any],
                  names: Mapping[str, str] | None) -> list[str]:
    """A readable name per class: ``names[str(label)]`` when given."""
    names = names or {}
    return [str(names.get(str(label), label)) for label in classes]


def _threshold_row(threshold: float, scores: Any, right: Any) -> ThresholdRow:
    kept = scores >= threshold - 1e-12
    count = int(kept.sum())
    return ThresholdRow(
        threshold=round(float(threshold), 4),
        coverage=count / len(scores),
        kept=count,
        accuracy=float(right[kept].mean()) if count else None)


def compute_stats(val_results: Any, names: Mapping[str, str] | None = None,
                  train_result: Any = None) -> ReportStats:
    """Confusion matrix, per-class rows and threshold curve of a ValResults;
    ``train_result`` (a TrainClassifierReturnMsg) adds the per-epoch
    reference accuracies and the previous classifiers' accuracies."""

    n = len(val_results.classes)
    gt = np.asarray(val_results.gt, dtype=np.int64)
    est = np.asarray(val_results.est, dtype=np.int64)
    scores = np.asarray(val_results.scores, dtype=np.float64)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (gt, est), 1)
    right = gt == est
    labels = [str(label) for label in val_results.classes]
    shown = display_names(val_results.classes, names)
    rows = [ClassRow(label=labels[i], name=shown[i],
                     support=int(confusion[i].sum()),
                     correct=int(confusion[i, i]),
                     predicted=int(confusion[:, i].sum()))
            for i in range(n)]
    curve = [_threshold_row(t, scores, right)
             for t in np.linspace(0.0, 1.0, CURVE_STEPS)]
    table = [_threshold_row(t, scores, right) for t in TABLE_THRESHOLDS]
    stats = ReportStats(
        count=len(gt), accuracy=float(right.mean()), classes=rows,
        confusion=confusion.tolist(), curve=curve, table=table)
    if train_result is not None:
        stats = ReportStats(
            **{**stats.__dict__,
               'ref_accs': [float(a) for a in train_result.ref_accs],
               'pc_accs': [float(a) for a in train_result.pc_accs],
               'new_acc': float(train_result.acc),
               'runtime': float(train_result.runtime)})
    return stats
