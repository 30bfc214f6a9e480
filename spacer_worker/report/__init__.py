"""A training report people can read: figures and one HTML page.

``build_report(val_results, ...)`` turns a ``ValResults`` (and, when at
hand, the ``TrainClassifierReturnMsg`` of the same training) into files
held in memory: a PNG per figure, ``index.html`` that shows them with the
numbers behind them, and ``report.json`` with those numbers. ``write_report``
stores them under a folder (any storage), ``write_report_dir`` under a
local directory. Worker side: needs numpy and matplotlib (``worker`` extra).
"""

from spacer_worker.report.build import (
    REPORT_INDEX,
    Report,
    build_report,
    load_label_names,
    report_folder_for,
    write_report,
    write_report_dir,
)
from spacer_worker.report.stats import ReportStats, compute_stats

__all__ = [
    'REPORT_INDEX',
    'Report',
    'ReportStats',
    'build_report',
    'compute_stats',
    'load_label_names',
    'report_folder_for',
    'write_report',
    'write_report_dir',
]
