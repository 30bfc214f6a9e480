"""PySpacer's messages, at PySpacer's import path (``spacer.messages``).

What a client sends lives in :mod:`spacer_worker.messages.task_messages`, what a task
answers in :mod:`spacer_worker.data_classes.results`, and jobs with the task
table in :mod:`spacer_worker.messages.table`; this module gathers them under the
names PySpacer code imports. All of it runs on a client without torch,
scikit-learn or numpy.
"""

from __future__ import annotations

from spacer_worker.constants import ClassifierType, FeatureCache, TaskName
from spacer_worker.data_classes import DataLocation, ImageLabels
from spacer_worker.data_classes.results import (
    ClassifyReturnMsg,
    ExtractFeaturesReturnMsg,
    TrainClassifierReturnMsg,
)
from spacer_worker.messages.table import TASKS, JobMsg, JobReturnMsg, ReturnMsg, TaskMsg
from spacer_worker.messages.task_messages import (
    ClassifyFeaturesMsg,
    ClassifyImageMsg,
    ExtractFeaturesMsg,
    TrainClassifierMsg,
    TrainingTaskLabels,
)

__all__ = [
    'TASK_MESSAGES', 'RETURN_MESSAGES', 'ClassifierType', 'ClassifyFeaturesMsg',
    'ClassifyImageMsg', 'ClassifyReturnMsg', 'DataLocation',
    'ExtractFeaturesMsg', 'ExtractFeaturesReturnMsg', 'FeatureCache',
    'ImageLabels', 'JobMsg', 'JobReturnMsg', 'ReturnMsg', 'TaskMsg', 'TaskName',
    'TrainClassifierMsg', 'TrainClassifierReturnMsg', 'TrainingTaskLabels',
]

# Task name -> message classes, read from the contract table.
TASK_MESSAGES = {name: row.message for name, row in TASKS.items()}
RETURN_MESSAGES = {name: row.returns for name, row in TASKS.items()}


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'DataClass': 'spacer_worker.data_classes:DataClass',
    'LabelId': 'spacer_worker.data_classes:LabelId',
}, globals())
