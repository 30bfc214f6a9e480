"""Build a report in memory and store it: locally or next to a classifier."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import MessageError
from spacer_worker.report import figures as draw
from spacer_worker.report import page
from spacer_worker.report.stats import ReportStats, compute_stats
from spacer_worker.storage import store_bytes

REPORT_INDEX = 'index.html'


@dataclass(frozen=True)
class Report:
    """The report's files (name -> bytes) and the numbers behind them."""

    files: dict[str, bytes]
    stats: ReportStats

    @property
    def figures(self) -> list[str]:
        return sorted(name for name in self.files if name.endswith('.png'))


def load_label_names(path: str | Path) -> dict[str, str]:
    """Label names from a JSON file: ``{"<label id>": "<name>", ...}`` or a
    list of ``{"id": ..., "name": ...}`` objects (CoralNet's label list)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise MessageError(f'Cannot read label names {path}: {e.strerror}.'
                           ) from e
    except ValueError as e:
        raise MessageError(f'Label names {path} are not valid JSON: {e}.'
                           ) from e
    if isinstance(data, list) and all(
            isinstance(item, dict) and 'id' in item and 'name' in item
            for item in data):
        data = {str(item['id']): item['name'] for item in data}
    if not isinstance(data, dict) or not all(
            isinstance(name, str) for name in data.values()):
        raise MessageError(
            f'Label names {path}: expected a JSON object of label id -> name '
            f'(e.g. {{"1": "sand"}}) or a list of {{"id", "name"}} objects.')
    return {str(key): name for key, name in data.items()}


def build_report(val_results: Any, names: Mapping[str, str] | None = None,
                 train_result: Any = None,
                 title: str = 'Training report') -> Report:
    """Every figure as PNG, ``index.html`` and ``report.json``."""
    stats = compute_stats(val_results, names, train_result)
    files: dict[str, bytes] = {}
    captions: dict[str, str] = {}

    def add(name: str, png: bytes, caption: str) -> None:
        files[name] = png
        captions[name] = caption

    add('confusion_counts.png', draw.confusion(stats, normalised=False),
        'Confusion matrix, counts of validation points')
    add('confusion_normalised.png', draw.confusion(stats, normalised=True),
        'Confusion matrix, each row divided by its support')
    add('per_class.png', draw.per_class(stats),
        'Accuracy and support of each class')
    add('threshold.png', draw.threshold(stats),
        'Accuracy and coverage against the confidence threshold')
    if stats.ref_accs:
        add('ref_accs.png', draw.ref_accs(stats),
            'Reference-set accuracy per epoch')
    if stats.pc_accs:
        add('previous.png', draw.previous(stats),
            'Accuracy of this and the previous classifiers')
    files[REPORT_INDEX] = page.render(stats, captions, title).encode()
    files['report.json'] = json.dumps(stats.to_json(), indent=1).encode()
    return Report(files=files, stats=stats)


def write_report_dir(report: Report, directory: str | Path) -> Path:
    """Write the files under ``directory`` (created); returns index.html."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in report.files.items():
        target = folder / name
        partial = target.with_name(f'.{name}.partial')
        partial.write_bytes(data)
        partial.replace(target)
    return folder / REPORT_INDEX


def report_folder_for(model_loc: Any) -> Any:
    """Where a classifier's report goes: ``<key without extension>_report``
    beside it, on the same storage (``model/classifier.pkl`` ->
    ``model/classifier_report/``)."""

    key = model_loc.key
    head, sep, tail = key.rpartition('/')
    stem = tail.rsplit('.', 1)[0] if '.' in tail[1:] else tail
    return DataLocation(model_loc.storage_type, f'{head}{sep}{stem}_report',
                        model_loc.bucket_name)


def write_report(report: Report, folder: Any) -> Any:
    """Store the files under the DataLocation ``folder`` (any writable
    storage); returns the location of index.html."""

    index = None
    # index.html last: once it is there, every file it links to is too.
    for name in sorted(report.files, key=lambda n: n == REPORT_INDEX):
        loc = DataLocation(folder.storage_type, f'{folder.key}/{name}',
                           folder.bucket_name)
        store_bytes(loc, report.files[name])
        if name == REPORT_INDEX:
            index = loc
    return index
