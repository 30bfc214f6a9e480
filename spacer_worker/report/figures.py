"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Each figure is its own ``Figure`` on a ``FigureCanvasAgg`` (no pyplot, no
global state), so reports can be drawn from several threads and on a
machine without a display. Sizes and fonts grow and shrink with the number
of classes so that ~100 labels stay legible.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spacer_worker.report.stats import ReportStats

DPI = 100
_NAME_CHARS = 28


def _short(name: str) -> str:
    # Cut in the middle: labels often differ only at their end
    # ("Porites (massive)" / "Porites (branching)").
    if len(name) <= _NAME_CHARS:
        return name
    keep = (_NAME_CHARS - 1) // 2
    return f'{name[:keep]}…{name[-keep:]}'


def _label_font(n: int) -> float:
    return 9.0 if n <= 20 else 7.0 if n <= 50 else 5.5


def _new_figure(width: float, height: float) -> Any:

    figure = Figure(figsize=(width, height), dpi=DPI, layout='constrained')
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata: the same report gives the same bytes.
    figure.savefig(buffer, format='png', dpi=dpi,
                   metadata={'Software': None})
    return buffer.getvalue()


def confusion(stats: ReportStats, normalised: bool) -> bytes:
    """The confusion matrix (rows: true class, columns: estimated), as
    counts or with each row divided by its support."""

    matrix = np.asarray(stats.confusion, dtype=np.float64)
    n = len(matrix)
    if normalised:
        support = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, support, out=np.zeros_like(matrix),
                           where=support > 0)
    side = min(24.0, max(5.5, 3.0 + 0.2 * n))
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap='Blues', interpolation='nearest',
                        vmin=0.0, vmax=1.0 if normalised else None)
    names = [_short(c.name) for c in stats.classes]
    font = _label_font(n)
    axes.set_xticks(range(n), names, rotation=90 if n > 8 else 0,
                    fontsize=font)
    axes.set_yticks(range(n), names, fontsize=font)
    axes.set_xlabel('estimated label')
    axes.set_ylabel('true label')
    title = 'share of each true label' if normalised else 'points'
    axes.set_title(f'Confusion matrix ({title}), {stats.count} validation '
                   f'points')
    if n <= 25:
        peak = matrix.max() or 1.0
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if value == 0:
                    continue
                text = f'{value:.2f}' if normalised else f'{int(value)}'
                axes.text(j, i, text, ha='center', va='center',
                          fontsize=font,
                          color='white' if value > 0.6 * peak else 'black')
    figure.colorbar(image, ax=axes, shrink=0.6)
    # Many classes: small labels, so more pixels per point to keep them sharp.
    return _png(figure, dpi=DPI if n <= 50 else 140)


def per_class(stats: ReportStats) -> bytes:
    """Accuracy (recall) and support of each class, side by side."""
    n = len(stats.classes)
    height = max(3.0, 1.2 + 0.2 * n)
    figure = _new_figure(10.0, height)
    acc_axes, support_axes = figure.subplots(1, 2, sharey=True)
    positions = range(n)
    accuracies = [c.accuracy or 0.0 for c in stats.classes]
    acc_axes.barh(positions, accuracies, color='#3b7dd8')
    acc_axes.set_xlim(0, 1)
    acc_axes.axvline(stats.accuracy, color='#444444', linestyle='--',
                     linewidth=1, label=f'overall {stats.accuracy:.1%}')
    acc_axes.legend(loc='lower right', fontsize=8)
    acc_axes.set_xlabel('accuracy (share of its points classified right)')
    acc_axes.set_yticks(list(positions), [_short(c.name) for c in stats.classes],
                        fontsize=_label_font(n))
    # No margins: with 100 classes 5% would be five empty rows.
    acc_axes.set_ylim(n - 0.5, -0.5)
    support_axes.barh(positions, [c.support for c in stats.classes],
                      color='#999999')
    support_axes.set_xlabel('support (validation points)')
    figure.suptitle('Per-class accuracy and support')
    return _png(figure, dpi=DPI if n <= 50 else 140)


def threshold(stats: ReportStats) -> bytes:
    """Accuracy of the points kept, and the share kept, as the confidence
    threshold rises (CoralNet's alleviate curve)."""
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    xs = [row.threshold for row in stats.curve]
    axes.plot(xs, [row.accuracy if row.accuracy is not None else float('nan')
                   for row in stats.curve], label='accuracy of kept points',
              color='#3b7dd8', linewidth=2)
    axes.plot(xs, [row.coverage for row in stats.curve],
              label='coverage (share kept)', color='#d8823b', linewidth=2)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel('confidence threshold')
    axes.set_ylabel('share')
    axes.grid(alpha=0.3)
    axes.legend(loc='lower left')
    axes.set_title('Accuracy and coverage against the confidence threshold')
    return _png(figure)


def ref_accs(stats: ReportStats) -> bytes:
    """Reference-set accuracy after each epoch."""
    figure = _new_figure(7.0, 4.0)
    axes = figure.add_subplot()
    epochs = range(1, len(stats.ref_accs) + 1)
    axes.plot(list(epochs), stats.ref_accs, marker='o' if
              len(stats.ref_accs) <= 30 else None, color='#3b7dd8')
    axes.set_xlabel('epoch')
    axes.set_ylabel('reference-set accuracy')
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title('Reference-set accuracy per epoch')
    return _png(figure)


def previous(stats: ReportStats) -> bytes:
    """This classifier's validation accuracy beside the previous ones'."""
    names = [f'previous {i + 1}' for i in range(len(stats.pc_accs))]
    values = list(stats.pc_accs)
    colours = ['#999999'] * len(values)
    if stats.new_acc is not None:
        names.append('this one')
        values.append(stats.new_acc)
        colours.append('#3b7dd8')
    figure = _new_figure(max(5.0, 1.5 + 0.6 * len(values)), 4.0)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(values)), values, color=colours)
    axes.bar_label(bars, labels=[f'{v:.1%}' for v in values], fontsize=8)
    axes.set_xticks(range(len(values)), names, rotation=45 if
                    len(values) > 8 else 0, fontsize=8)
    axes.set_ylim(0, 1.1)
    axes.set_ylabel('accuracy on this validation set')
    axes.set_title('Comparison with the previous classifiers')
    return _png(figure)
