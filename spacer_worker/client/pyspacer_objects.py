"""PySpacer's own message objects on the caller's side.

CoralNet keeps PySpacer (0.13 today) in its web process: it builds its
``JobMsg``s with ``spacer.messages`` and reads the results with the same
classes. So :class:`~spacer_worker.client.coralnet.CeleryQueue` takes those
objects as they are, sends their own JSON (the wire speaks 0.13 and 0.14),
and hands results back in the caller's classes, rebuilt from the JSON the
caller's own PySpacer wrote. Nothing here imports PySpacer unless the
caller's objects came from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spacer_worker.exceptions import MessageError, failures

if TYPE_CHECKING:
    from spacer_worker.messages import JobMsg, JobReturnMsg

logger = logging.getLogger(__name__)

#: The class family recorded for a job submitted as PySpacer's own JobMsg.
PYSPACER = 'spacer'


def _pyspacer_class(obj: Any, name: str) -> bool:
    """Whether ``obj`` is (a subclass of) PySpacer's class ``name``."""
    return any(cls.__name__ == name and cls.__module__.split('.')[0] == PYSPACER
               for cls in type(obj).__mro__)


def as_job_msg(job_msg: Any) -> tuple[JobMsg, dict, str | None]:
    """(our JobMsg, the JSON to send, the caller's class family) for a
    JobMsg of ours or of PySpacer 0.13/0.14.

    PySpacer's message is sent in the JSON its own ``serialize`` wrote, so
    the worker answers in the shapes that version reads; it is checked
    here, so a bad message fails at submit, in the caller's process.
    """
    from spacer_worker.messages import JobMsg

    if isinstance(job_msg, JobMsg):
        job_msg.check()
        return job_msg, job_msg.serialize(), None
    if not _pyspacer_class(job_msg, 'JobMsg'):
        raise MessageError(
            f'submit_job expects a JobMsg (spacer_worker.messages.JobMsg, or '
            f'PySpacer\'s spacer.messages.JobMsg), got '
            f'{type(job_msg).__module__}.{type(job_msg).__qualname__}.')
    try:
        data = job_msg.serialize()
    except Exception as e:
        raise MessageError(
            f'submit_job: PySpacer\'s JobMsg could not serialize itself '
            f'({type(e).__name__}: {e}); check its tasks\' fields.') from e
    if not isinstance(data, Mapping):
        raise MessageError(f'submit_job: PySpacer\'s JobMsg.serialize() gave '
                           f'{type(data).__name__}, not a JSON object.')
    return JobMsg.deserialize(data), dict(data), PYSPACER


def in_callers_classes(msg: JobReturnMsg, original_job: Mapping | None,
                       family: str | None, job: Any) -> Any:
    """``msg`` as the caller's own JobReturnMsg: PySpacer's when the job
    was submitted as PySpacer's JobMsg and PySpacer is importable here,
    else ours. ``original_job`` is the JSON the caller submitted."""
    if family != PYSPACER:
        return msg
    try:
        from spacer.messages import JobMsg as TheirJobMsg
        from spacer.messages import JobReturnMsg as TheirReturnMsg
    except ImportError:
        logger.warning('%s was submitted as PySpacer\'s JobMsg, but spacer '
                       'is not importable in this process: its result comes '
                       'back as spacer_worker\'s JobReturnMsg.', job)
        return msg
    data = msg.serialize()
    if original_job is not None:
        data['original_job'] = dict(original_job)
    if data.get('original_job') is None:
        logger.warning('%s: no stored JobMsg to rebuild in PySpacer\'s '
                       'classes; its result comes back as spacer_worker\'s '
                       'JobReturnMsg.', job)
        return msg
    try:
        return TheirReturnMsg.deserialize(data)
    except Exception as e:
        # The result does not fit the caller's PySpacer: a failure of this
        # job alone, in the caller's classes, sortable by its last line.
        reason = failures.line(
            failures.printed_class(type(e)),
            f'{job}: its result could not be read by the installed PySpacer '
            f'({type(e).__name__}: {e}).')
        return TheirReturnMsg(
            original_job=TheirJobMsg.deserialize(data['original_job']),
            ok=False, results=None, error_message=reason)
