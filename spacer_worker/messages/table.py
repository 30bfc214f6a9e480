"""The task contract: one row per task, read by every other part.

Each row names a task (PySpacer's name), the Celery task that runs it, the
kind of queue it goes to, the message it takes and the message it returns.
Messages, routing (:mod:`spacer_worker.celery`), the client, the CLI and the
worker's task adapters all derive from :data:`TASKS`; change a task here.

``spacer.process_job`` runs a :class:`JobMsg` (several tasks of one kind)
and goes to the queue of its tasks' kind; its messages are defined here
because a job's task list is decoded through the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from spacer_worker.constants import QueueKind, StrEnum, TaskName
from spacer_worker.data_classes import DataClass
from spacer_worker.data_classes.codec import (
    BOOL,
    OPT_STR,
    Choice,
    Codec,
    ListOf,
    Nested,
    field,
)
from spacer_worker.data_classes.results import (
    ClassifyReturnMsg,
    ExtractFeaturesReturnMsg,
    TrainClassifierReturnMsg,
)
from spacer_worker.exceptions import MessageError
from spacer_worker.messages.task_messages import (
    ClassifyFeaturesMsg,
    ClassifyImageMsg,
    ExtractFeaturesMsg,
    TrainClassifierMsg,
)

__all__ = [
    'PROCESS_JOB', 'TASKS', 'JobMsg', 'JobReturnMsg', 'Task', 'Unit',
    'by_celery_name', 'for_message',
]


class Unit(StrEnum):
    """What one task of a job works on, as progress and metrics count it."""

    IMAGES = 'images'
    TASKS = 'tasks'


@dataclasses.dataclass(frozen=True)
class Task:
    """One row of the contract."""

    name: str                  # PySpacer's task name (or 'process_job')
    celery_name: str           # the Celery task a sender names
    queue: QueueKind | None    # None: process_job, routed by its tasks
    message: type[DataClass]
    returns: type[DataClass]
    #: The plain function that runs it, ``'module:function'``; imported
    #: only on a worker (:mod:`spacer_worker.tasks`).
    body: str = ''
    #: Whether the body takes ``progress=`` and reports as it goes.
    progress: bool = False
    #: What one task of a job is: an image, or just a task.
    unit: Unit = Unit.TASKS

    def required_keys(self) -> list[tuple[str, ...]]:
        """For each field of the message without a default, the JSON keys
        it may arrive under (its name, then legacy aliases)."""
        return [(f.name, *f.metadata.get('aliases', ()))
                for f in dataclasses.fields(self.message)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]

    def shaped_like(self, data: Mapping[str, Any]) -> bool:
        """Whether a JSON object holds every field this message requires
        (how the CLI tells which message a file holds)."""
        return all(any(key in data for key in keys)
                   for keys in self.required_keys())


_TASKS = 'spacer_worker.tasks'

TASKS: dict[TaskName, Task] = {row.name: row for row in [
    Task(TaskName.EXTRACT_FEATURES, 'spacer.extract_features',
         QueueKind.EXTRACT, ExtractFeaturesMsg, ExtractFeaturesReturnMsg,
         body=f'{_TASKS}.images:extract_features', unit=Unit.IMAGES),
    Task(TaskName.CLASSIFY_IMAGE, 'spacer.classify_image',
         QueueKind.EXTRACT, ClassifyImageMsg, ClassifyReturnMsg,
         body=f'{_TASKS}.images:classify_image', unit=Unit.IMAGES),
    Task(TaskName.TRAIN_CLASSIFIER, 'spacer.train_classifier',
         QueueKind.TRAIN, TrainClassifierMsg, TrainClassifierReturnMsg,
         body=f'{_TASKS}.training:train_classifier', progress=True),
    Task(TaskName.CLASSIFY_FEATURES, 'spacer.classify_features',
         QueueKind.CLASSIFY, ClassifyFeaturesMsg, ClassifyReturnMsg,
         body=f'{_TASKS}.classification:classify_features'),
]}


# --- jobs --------------------------------------------------------------------

TaskMsg = ExtractFeaturesMsg | TrainClassifierMsg | ClassifyFeaturesMsg | ClassifyImageMsg
ReturnMsg = ExtractFeaturesReturnMsg | TrainClassifierReturnMsg | ClassifyReturnMsg


def _tasks_codec(values: Mapping[str, Any]) -> Codec:
    return ListOf(Nested(TASKS[values['task_name']].message),
                  what='task messages')


def _results_codec(values: Mapping[str, Any]) -> Codec:
    if not values['ok']:
        # A failed job carries whatever PySpacer put there (None).
        return Codec()
    task_name = values['original_job'].task_name
    return ListOf(Nested(TASKS[task_name].returns), what='return messages')


@dataclasses.dataclass(eq=False)
class JobMsg(DataClass):
    """Several tasks of one kind, run in order by process_job."""

    task_name: str = field(Choice(TaskName))
    tasks: list[TaskMsg] = field(_tasks_codec)

    @classmethod
    def example(cls) -> JobMsg:
        return cls(task_name='classify_image', tasks=[ClassifyImageMsg.example()])


@dataclasses.dataclass(eq=False)
class JobReturnMsg(DataClass):
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


PROCESS_JOB = Task('process_job', 'spacer.process_job', None, JobMsg,
                   JobReturnMsg, body='spacer_worker.tasks:process_job',
                   progress=True)

# Every row a sender may name, by Celery task name.
_BY_CELERY_NAME: dict[str, Task] = {
    row.celery_name: row for row in [*TASKS.values(), PROCESS_JOB]}
_BY_MESSAGE: dict[type, Task] = {
    row.message: row for row in [*TASKS.values(), PROCESS_JOB]}
CELERY_NAMES: tuple[str, ...] = tuple(_BY_CELERY_NAME)


def by_celery_name(name: str) -> Task:
    """The row of a Celery task name; MessageError naming the known ones."""
    try:
        return _BY_CELERY_NAME[name]
    except KeyError:
        raise MessageError(
            f"Unknown task {name!r}; expected one of "
            f"{', '.join(_BY_CELERY_NAME)}.") from None


def for_message(msg: Any) -> Task:
    """The row whose message class ``msg`` is an instance of."""
    row = _BY_MESSAGE.get(type(msg))
    if row is None:
        raise MessageError(
            f"Cannot submit a {type(msg).__name__}: expected one of "
            f"{', '.join(c.__name__ for c in _BY_MESSAGE)} from "
            f"spacer_worker.messages.")
    return row
