"""The report's HTML page: one file, no scripts, no external resources.

Images are the PNG files beside it (relative links), so the folder can be
copied, zipped or served from a bucket as it is. Every number is escaped
text in a table with ``data-*`` attributes, so a browser test (and a
person with a screen reader) reads the same values the figures show.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from spacer_worker.report.stats import ReportStats

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.name { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto;
       border: 1px solid #eee; }
.summary td { text-align: left; } .note { color: #666; }
"""


def _pct(value: float | None) -> str:
    return '–' if value is None else f'{value:.1%}'


def _num(value: float | None) -> str:
    return '' if value is None else repr(float(value))


def _figure(name: str, alt: str) -> str:
    return (f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}"'
            f' data-figure="{html.escape(name)}"><figcaption class="note">'
            f'{html.escape(name)}</figcaption></figure>')


def render(stats: ReportStats, figures: Mapping[str, str],
           title: str = 'Training report') -> str:
    """The page; ``figures`` maps each PNG file name to its description."""
    e = html.escape
    parts = [
        '<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>{e(title)}</title>',
        # An inline icon: browsers otherwise ask for /favicon.ico.
        '<link rel="icon" href="data:,">',
        f'<style>{_STYLE}</style></head><body>',
        f'<h1>{e(title)}</h1>',
        '<table class="summary" id="summary">',
        f'<tr><th>validation points</th><td data-value="{stats.count}">'
        f'{stats.count}</td></tr>',
        f'<tr><th>classes</th><td data-value="{len(stats.classes)}">'
        f'{len(stats.classes)}</td></tr>',
        f'<tr><th>accuracy</th><td id="accuracy" data-value='
        f'"{_num(stats.accuracy)}">{_pct(stats.accuracy)}</td></tr>',
    ]
    if stats.runtime is not None:
        parts.append(f'<tr><th>training time</th><td>{stats.runtime:.1f} s'
                     f'</td></tr>')
    parts.append('</table>')

    parts.append('<h2>Confusion matrix</h2><p class="note">Rows are the '
                 'annotated (true) labels, columns what the classifier '
                 'said.</p>')
    for name in ('confusion_counts.png', 'confusion_normalised.png'):
        if name in figures:
            parts.append(_figure(name, figures[name]))

    parts.append('<h2>Per-class accuracy and support</h2>')
    if 'per_class.png' in figures:
        parts.append(_figure('per_class.png', figures['per_class.png']))
    parts.append('<table id="per-class"><thead><tr><th>label</th><th>name'
                 '</th><th>support</th><th>correct</th><th>accuracy</th>'
                 '<th>predicted as</th></tr></thead><tbody>')
    for row in stats.classes:
        parts.append(
            f'<tr data-label="{e(row.label)}" data-support="{row.support}" '
            f'data-correct="{row.correct}" data-accuracy='
            f'"{_num(row.accuracy)}" data-predicted="{row.predicted}">'
            f'<td>{e(row.label)}</td><td class="name">{e(row.name)}</td>'
            f'<td>{row.support}</td><td>{row.correct}</td>'
            f'<td>{_pct(row.accuracy)}</td><td>{row.predicted}</td></tr>')
    parts.append('</tbody></table>')

    parts.append('<h2>Accuracy and coverage against the confidence '
                 'threshold</h2><p class="note">Keeping only the points whose '
                 'top score is at least the threshold: how many remain, and '
                 'how many of those are right.</p>')
    if 'threshold.png' in figures:
        parts.append(_figure('threshold.png', figures['threshold.png']))
    parts.append('<table id="thresholds"><thead><tr><th>threshold</th>'
                 '<th>points kept</th><th>coverage</th><th>accuracy</th></tr>'
                 '</thead><tbody>')
    for row in stats.table:
        parts.append(
            f'<tr data-threshold="{_num(row.threshold)}" data-kept='
            f'"{row.kept}" data-coverage="{_num(row.coverage)}" '
            f'data-accuracy="{_num(row.accuracy)}"><td>{row.threshold:.2f}'
            f'</td><td>{row.kept}</td><td>{_pct(row.coverage)}</td>'
            f'<td>{_pct(row.accuracy)}</td></tr>')
    parts.append('</tbody></table>')

    parts.append('<h2>Reference-set accuracy per epoch</h2>')
    if 'ref_accs.png' in figures:
        parts.append(_figure('ref_accs.png', figures['ref_accs.png']))
        parts.append('<table id="ref-accs"><thead><tr><th>epoch</th>'
                     '<th>accuracy</th></tr></thead><tbody>')
        for epoch, acc in enumerate(stats.ref_accs, start=1):
            parts.append(f'<tr data-epoch="{epoch}" data-accuracy='
                         f'"{_num(acc)}"><td>{epoch}</td><td>{_pct(acc)}</td>'
                         f'</tr>')
        parts.append('</tbody></table>')
    else:
        parts.append('<p class="note" id="ref-accs-missing">Not known: give '
                     'the training\'s result (TrainClassifierReturnMsg JSON, '
                     '<code>--train-result</code>) to see it.</p>')

    parts.append('<h2>Comparison with the previous classifiers</h2>')
    if 'previous.png' in figures:
        parts.append(_figure('previous.png', figures['previous.png']))
        parts.append('<table id="previous"><thead><tr><th>classifier</th>'
                     '<th>accuracy</th></tr></thead><tbody>')
        for i, acc in enumerate(stats.pc_accs, start=1):
            parts.append(f'<tr data-previous="{i}" data-accuracy='
                         f'"{_num(acc)}"><td>previous {i}</td>'
                         f'<td>{_pct(acc)}</td></tr>')
        parts.append(f'<tr data-previous="new" data-accuracy='
                     f'"{_num(stats.new_acc)}"><td>this one</td>'
                     f'<td>{_pct(stats.new_acc)}</td></tr>')
        parts.append('</tbody></table>')
    elif stats.new_acc is not None:
        parts.append('<p class="note" id="previous-missing">No previous '
                     'classifiers were given to this training.</p>')
    else:
        parts.append('<p class="note" id="previous-missing">Not known: give '
                     'the training\'s result (<code>--train-result</code>).'
                     '</p>')
    parts.append('</body></html>')
    return '\n'.join(parts) + '\n'
