"""What a message from the broker must satisfy before its task starts.

Checked up front, before any byte is read, so a refused message costs
nothing: every location it reads or writes is allowed by the worker's
sandbox (:mod:`spacer_worker.storage.sandbox`, which checks again at each
read and write), no output is one of its inputs (a feature_loc equal to its
image_loc would overwrite the image), and it stays within the bounds below,
each a setting:

* MESSAGE_MAX_BYTES: the payload's JSON size;
* MAX_TASKS_PER_JOB: tasks in one JobMsg;
* MAX_LABELS_PER_TRAINING, MAX_EPOCHS, MAX_HIDDEN_UNITS: one training.

A direct call of ``spacer_worker.tasks`` skips all of this, as PySpacer does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import (
    LocationNotAllowedError,
    MessageLimitError,
)
from spacer_worker.storage.sandbox import READ, WRITE, Sandbox

__all__ = ['admit', 'check_payload_size', 'locations']


def check_payload_size(task_name: str, payload: Any) -> None:
    """MessageLimitError when the payload's JSON is over MESSAGE_MAX_BYTES."""
    limit = config.get('MESSAGE_MAX_BYTES')
    if isinstance(payload, (str, bytes)):
        size = len(payload)
    else:
        try:
            size = len(json.dumps(payload, separators=(',', ':')))
        except (TypeError, ValueError, RecursionError):
            return          # not JSON: decoding refuses it with its reason
    if size > limit:
        raise MessageLimitError(
            f"{task_name}: the payload is {size} bytes of JSON, over the "
            f"MESSAGE_MAX_BYTES limit of {limit}; split the work into "
            f"smaller messages.")


def locations(msg: Any) -> tuple[list[Any], list[Any]]:
    """(locations read, locations written) by a task message or JobMsg."""
    from spacer_worker import messages

    reads: list[Any] = []
    writes: list[Any] = []
    for task in getattr(msg, 'tasks', None) or [msg]:
        extractor = getattr(task, 'extractor', None)
        if extractor is not None:
            reads.extend(getattr(extractor, 'data_locations', {}).values())
        for name in ('image_loc', 'classifier_loc'):
            if getattr(task, name, None) is not None:
                reads.append(getattr(task, name))
        labels = getattr(task, 'labels', None)
        if labels is not None:
            for name in ('train', 'ref', 'val'):
                reads.extend(getattr(labels, name).keys())
        reads.extend(getattr(task, 'previous_model_locs', None) or [])
        if hasattr(task, 'feature_loc'):
            # Extraction writes it; classify_features reads it.
            extracts = isinstance(task, messages.ExtractFeaturesMsg)
            (writes if extracts else reads).append(task.feature_loc)
        for name in ('model_loc', 'valresult_loc'):
            if getattr(task, name, None) is not None:
                writes.append(getattr(task, name))
    return reads, writes


def _identity(loc: Any) -> tuple:
    kind = str(getattr(loc.storage_type, 'value', loc.storage_type))
    if kind == 'filesystem':
        return (kind, os.path.realpath(loc.key))
    if kind == 's3':
        return (kind, loc.bucket_name, loc.key)
    return (kind, loc.key)


def admit(msg: Any, sandbox: Sandbox) -> None:
    """Raise (LocationNotAllowedError, MessageLimitError) unless ``msg``
    may run under ``sandbox``."""
    _check_bounds(msg)
    reads, writes = locations(msg)
    for loc in reads:
        sandbox.check(loc, READ)
    for loc in writes:
        sandbox.check(loc, WRITE)
    for task in getattr(msg, 'tasks', None) or [msg]:
        cache_dir = getattr(task, 'feature_cache_dir', None)
        if cache_dir is not None:
            sandbox.feature_cache_dir(cache_dir)
    inputs = {_identity(loc): loc for loc in reads}
    for loc in writes:
        source = inputs.get(_identity(loc))
        if source is not None:
            raise LocationNotAllowedError(
                f"{loc!r} is both read and written by this message; an "
                f"output may never overwrite an input. Store results at a "
                f"location of their own.")


def _check_bounds(msg: Any) -> None:
    tasks = getattr(msg, 'tasks', None)
    if tasks is not None:
        _at_most(len(tasks), 'MAX_TASKS_PER_JOB', 'tasks in this JobMsg')
    for task in tasks if tasks is not None else [msg]:
        labels = getattr(task, 'labels', None)
        if labels is not None:
            count = sum(getattr(labels, name).label_count
                        for name in ('train', 'ref', 'val'))
            _at_most(count, 'MAX_LABELS_PER_TRAINING',
                     'annotations in this training')
        epochs = getattr(task, 'nbr_epochs', None)
        if epochs is not None:
            _at_most(epochs, 'MAX_EPOCHS', 'epochs (nbr_epochs)')
        sizes = getattr(getattr(task, 'trainer', None),
                        'mlp_hidden_layer_sizes', None)
        if sizes:
            _at_most(sum(sizes), 'MAX_HIDDEN_UNITS',
                     f'hidden units (mlp_hidden_layer_sizes={tuple(sizes)})')


def _at_most(value: int, setting: str, what: str) -> None:
    limit = config.get(setting)
    if value > limit:
        raise MessageLimitError(
            f"This message asks for {value} {what}, over this worker's "
            f"{setting} limit of {limit}.")
