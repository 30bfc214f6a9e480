"""What ``CeleryQueue`` checks before it believes, or acts on, a record in
Redis (docs/operations.md, "The web process and records in Redis").

Its books and the workers' results share a Redis that others may write
to. Each check here turns one kind of record into a value the collect
cycle can trust, or says why it cannot, so that one bad record fails only
its own job:

* an id in the books' sorted sets must be text (UTF-8, at most 200
  bytes); any other is fenced off (removed from every structure);
* a job's ``info`` record must be an object with a ``job_id``, a
  ``queue`` and a numeric ``submitted_at``;
* a job that is still waiting or running by its record is no longer
  believed past a deadline counted from its submit time
  (:mod:`.deadlines`): it reads LOST;
* a success must name the job it is collected for: the task name, the
  job tokens and the number of results of the JobMsg kept in the books;
* a payload is discarded, or read back, only at the job's own location
  (``PAYLOAD_LOCATION/<task id>.json``), never where a record points.

Client side: no torch, numpy or scikit-learn.
"""

from __future__ import annotations

from typing import Any

from spacer_worker.celery import payloads

ID_MAX_BYTES = 200


def task_id(raw: Any) -> str | None:
    """An id read from the books as text; None when it is not one of
    ours (not UTF-8, empty or too long)."""
    if isinstance(raw, str):
        raw = raw.encode('utf-8', 'surrogatepass')
    if not isinstance(raw, (bytes, bytearray)) or \
            not 0 < len(raw) <= ID_MAX_BYTES:
        return None
    try:
        return bytes(raw).decode('utf-8')
    except UnicodeDecodeError:
        return None


def split_ids(raws: list[Any]) -> tuple[list[str], list[Any]]:
    """(ids as text, raw ids to fence off), in order."""
    good: list[str] = []
    bad: list[Any] = []
    for raw in raws:
        text = task_id(raw)
        if text is None:
            bad.append(raw)
        else:
            good.append(text)
    return good, bad


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) != float('inf')


def books_info(value: Any) -> dict | None:
    """A decoded ``info`` record, when it has the shape submit writes."""
    if not isinstance(value, dict) or 'job_id' not in value:
        return None
    if not isinstance(value.get('queue'), str) or \
            not _number(value.get('submitted_at')):
        return None
    if not isinstance(value.get('spec_level'), (str, type(None))):
        return None
    return value


def _tokens(job: Any) -> tuple[Any, list[Any]] | None:
    if not isinstance(job, dict) or not isinstance(job.get('tasks'), list):
        return None
    return job.get('task_name'), [t.get('job_token') if isinstance(t, dict)
                                  else None for t in job['tasks']]


def result_mismatch(result: Any, stored: dict) -> str | None:
    """Why a SUCCESS record's JobReturnMsg JSON is not the answer to the
    JobMsg ``stored`` in the books (None: it is)."""
    if not isinstance(result, dict):
        return f'the result is a JSON {type(result).__name__}, not an object'
    theirs, ours = _tokens(result.get('original_job')), _tokens(stored)
    if ours is None:
        return 'the JobMsg kept in the books is not a JobMsg'
    if theirs is None:
        return 'the result names no original_job'
    if theirs != ours:
        return (f'the result answers another job (task {str(theirs[0])[:40]!r}'
                f', tokens {str(theirs[1])[:80]}; this job is task '
                f'{str(ours[0])[:40]!r}, tokens {str(ours[1])[:80]})')
    answers = result.get('results')
    if result.get('ok') is True and (not isinstance(answers, list) or
                                     len(answers) != len(ours[1])):
        count = len(answers) if isinstance(answers, list) else 'no'
        return (f'the result has {count} task results for a job of '
                f'{len(ours[1])} tasks')
    return None


def own_payload(ref: Any, task_id: str) -> bool:
    """True when ``ref`` names exactly the payload a job ``task_id``
    offloads: ``<PAYLOAD_LOCATION>/<task id>.json``."""
    if not payloads.is_reference(ref):
        return False
    try:
        loc = payloads.reference_location(ref)
        root = payloads.configured_root()
        if root is None:
            return False
        mine = root.location(f'{task_id}.json')
    except Exception:  # a malformed reference or id: not this job's
        return False
    return (str(loc.storage_type), loc.key, loc.bucket_name or None) == \
        (str(mine.storage_type), mine.key, mine.bucket_name or None)
