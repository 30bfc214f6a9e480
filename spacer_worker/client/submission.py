"""Idempotent submission: one job per (task name, job token) or per
idempotency key, however many times and from however many processes it is
submitted.

A web app that submits the same image twice (a double click, a request
retried by a proxy) must get one job. ``claim`` does, in one Lua script on
the result backend's Redis (so it is atomic against every concurrent
submitter):

* look up ``spacer:submit:<digest>``, the job that key last named (a
  value of another shape, or, for a CoralNet queue, a job not on its
  books, is taken over: Redis is shared, a forged key must not swallow a
  submission);
* if that job is still pending or running (its result record says so;
  ``SUBMIT_DEDUPE=all`` also accepts a finished one), return it: the caller
  enqueues nothing;
* else point the key at the new task id (with ``SUBMIT_DEDUPE_WINDOW`` as
  its TTL) and write the new job's PENDING record, both in the same script,
  so a second submitter arriving a microsecond later finds a live job.

A send that fails afterwards calls ``release``, which removes both again
(only if the key still names this task).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from spacer_worker import config
from spacer_worker.constants import StrEnum
from spacer_worker.exceptions import ConfigError, MessageError, RecordError

KEY_PREFIX = 'spacer:submit:'


class DedupeMode(StrEnum):
    ACTIVE = 'active'   # return the earlier job while pending or running
    ALL = 'all'         # ...or finished, within the window
    OFF = 'off'


# KEYS: dedupe key, new job's record key[, books hash: an earlier job is
# honoured only while it is on these books, and a new one is put there,
# in this script]. ARGV: new value (id + queue), window (s), mode, record
# value, record key prefix, record TTL (s, 0: none)[, new task id, its
# books entry]. A key whose value is not {"id": text, "queue": text} (forged,
# another version) is taken over, never returned.
_CLAIM = """
local earlier = redis.call('get', KEYS[1])
if earlier then
    local ok, held = pcall(cjson.decode, earlier)
    if not ok or type(held) ~= 'table' then held = {} end
    local id = held['id']
    local ours = type(id) == 'string' and type(held['queue']) == 'string'
        and #id > 0 and #id <= 200
    if ours and KEYS[3] then
        ours = redis.call('hexists', KEYS[3], id) == 1
    end
    if ours then
        if ARGV[3] == 'all' then return earlier end
        local record = redis.call('get', ARGV[5] .. id)
        if record then
            local ok2, meta = pcall(cjson.decode, record)
            local state = ok2 and type(meta) == 'table' and meta['status'] or nil
            if state ~= 'SUCCESS' and state ~= 'FAILURE' and state ~= 'REVOKED' then
                return earlier
            end
        end
    end
end
redis.call('set', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
if tonumber(ARGV[6] or '0') > 0 then
    redis.call('set', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[6]))
else
    redis.call('set', KEYS[2], ARGV[4])
end
if KEYS[3] then
    redis.call('hset', KEYS[3], ARGV[7], ARGV[8])
end
return false
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('del', KEYS[1])
end
return redis.call('del', KEYS[2])
"""


@dataclass(frozen=True)
class Books:
    """A queue's books a claim checks an earlier job against: the hash of
    its jobs (CeleryQueue's ``info``) and this job's entry there."""

    key: str
    entry: str


@dataclass(frozen=True)
class Claim:
    """The job a submission stands for: ``fresh`` when it is this one."""

    id: str
    queue: str
    fresh: bool
    key: str | None = None      # the Redis dedupe key (None: not deduped)


def dedupe_mode() -> DedupeMode:
    value = str(config.get('SUBMIT_DEDUPE')).strip().lower()
    try:
        return DedupeMode(value)
    except ValueError:
        raise ConfigError(f"SUBMIT_DEDUPE must be 'active', 'all' or 'off', "
                          f"got {value!r}.") from None


def dedupe_window() -> int:
    window = config.get('SUBMIT_DEDUPE_WINDOW')
    if window <= 0:
        raise ConfigError(f'SUBMIT_DEDUPE_WINDOW must be a positive number '
                          f'of seconds, got {window!r}; set SUBMIT_DEDUPE='
                          f'off to turn deduplication off.')
    return window


def job_tokens(payload: Any) -> list[str]:
    """The job tokens a payload names: its own, or its tasks' (JobMsg)."""
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get('job_token'), str):
        return [payload['job_token']]
    tasks = payload.get('tasks')
    if isinstance(tasks, list):
        return [t['job_token'] for t in tasks
                if isinstance(t, dict) and isinstance(t.get('job_token'), str)]
    return []


def dedupe_key(task: str, payload: Any,
               idempotency_key: str | None = None) -> str | None:
    """The Redis key of a submission; None when nothing names the job."""
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise MessageError(f'idempotency_key must be a non-empty string, '
                               f'got {idempotency_key!r}.')
        identity = f'key\0{idempotency_key}'
    else:
        tokens = job_tokens(payload)
        if not tokens:
            return None
        identity = '\0'.join(['token', task, *tokens])
    return KEY_PREFIX + hashlib.sha256(identity.encode()).hexdigest()


def redis_of(backend: Any) -> Any | None:
    """The result backend's Redis client, or None for another backend."""
    client = getattr(backend, 'client', None)
    if client is not None and hasattr(client, 'eval') and \
            hasattr(client, 'pipeline'):
        return client
    return None


CLAIM_SCRIPT = _CLAIM


def _claim_args(backend: Any, key: str, task_id: str, queue: str,
                record: str | bytes, mode: DedupeMode, window: int,
                record_ttl: int, books: Books | None = None
                ) -> tuple[list, list]:
    record_key = backend.get_key_for_task(task_id)
    # The record keys' prefix (celery-task-meta-, with any global prefix).
    prefix = record_key[:len(record_key) - len(task_id)]
    value = json.dumps({'id': task_id, 'queue': queue})
    args = [value, str(window), str(mode), record, prefix, str(record_ttl)]
    if books is None:
        return [key, record_key], args
    return [key, record_key, books.key], [*args, task_id, books.entry]


def claimed(earlier: Any, key: str, task_id: str, queue: str) -> Claim:
    """The Claim a reply of the claim script stands for (the script
    returns only a value of the shape it wrote)."""
    if earlier is None:
        return Claim(id=task_id, queue=queue, fresh=True, key=key)
    try:
        held = json.loads(earlier)
        return Claim(id=str(held['id']), queue=str(held['queue']),
                     fresh=False, key=key)
    except (ValueError, TypeError, KeyError) as e:
        raise RecordError(f'The dedupe key {key} holds no job: '
                          f'{str(earlier)[:80]!r}.') from e


def claim(backend: Any, key: str, task_id: str, queue: str,
          record: str | bytes, mode: DedupeMode, window: int,
          record_ttl: int = 0, books: Books | None = None) -> Claim:
    """Claim ``key`` for ``task_id`` (and write its PENDING ``record``), or
    return the job that holds it. With ``books``, only a job on that
    hash is returned (a key naming a job of nobody's books is taken
    over), and a new job is entered there in the same script, so a
    concurrent submitter finds it at once."""
    keys, args = _claim_args(backend, key, task_id, queue, record, mode,
                             window, record_ttl, books)
    earlier = redis_of(backend).eval(_CLAIM, len(keys), *keys, *args)
    return claimed(earlier, key, task_id, queue)


def queue_claim(script: Any, pipe: Any, backend: Any, key: str,
                task_id: str, queue: str, record: str | bytes,
                mode: DedupeMode, window: int, record_ttl: int = 0,
                books: Books | None = None) -> None:
    """:func:`claim`, queued on a pipeline (``script``: the registered
    CLAIM_SCRIPT); read its reply with :func:`claimed`."""
    keys, args = _claim_args(backend, key, task_id, queue, record, mode,
                             window, record_ttl, books)
    script(keys=keys, args=args, client=pipe)


def release(backend: Any, claimed: Claim) -> None:
    """Undo a fresh claim whose message could not be sent."""
    redis = redis_of(backend)
    value = json.dumps({'id': claimed.id, 'queue': claimed.queue})
    redis.eval(_RELEASE, 2, claimed.key or KEY_PREFIX,
               backend.get_key_for_task(claimed.id), value)
