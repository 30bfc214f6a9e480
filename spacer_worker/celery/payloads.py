"""Large task payloads kept in storage; the broker carries their location.

A training's labels (a 1M-annotation TrainClassifierMsg is hundreds of MB
of JSON) would otherwise sit in Redis, which runs ``noeviction``, once as
the message and again in the result. Above ``PAYLOAD_OFFLOAD_BYTES`` the
sender writes the serialized payload to ``PAYLOAD_LOCATION``
(``s3://bucket/prefix``, a filesystem directory, or ``memory://prefix`` in
one process) under ``<prefix>/<task id>.json`` and sends a reference::

    {'spacer_payload': {'version': 1, 'location': {DataLocation},
                        'bytes': n, 'sha256': '...', 'owner': 'worker'},
     'task_name': 'train_classifier'}     # JobMsg payloads: for routing

The worker reads it back (only from under its own ``PAYLOAD_LOCATION``, at
most ``PAYLOAD_MAX_BYTES``, and only if the sha256 matches), and a JobMsg
result then carries a compact ``original_job`` (:func:`compact_job`: the
same JSON shape, a training's labels emptied) instead of a third copy.

Who deletes the object: ``owner='worker'`` (``Client.submit``): the worker,
once the task has its final answer (success or failure, not a retry);
``owner='caller'`` (``contrib.coralnet.CeleryQueue``): the caller, once it
has read the result, since it rebuilds the full ``original_job`` from it.

Client side: nothing heavy at import; storage is imported by the calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from spacer_worker import config
from spacer_worker.data_classes import DataLocation, ImageLabels, LocationRoot
from spacer_worker.exceptions import MessageError, PayloadError
from spacer_worker.messages import JobMsg, TrainingTaskLabels
from spacer_worker.storage import load_bytes, store_bytes
from spacer_worker.storage.blobs import delete

logger = logging.getLogger(__name__)

REF_KEY = 'spacer_payload'
VERSION = 1
OWNERS = ('worker', 'caller')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.json$')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


@dataclass(frozen=True)
class PayloadRoot(LocationRoot):
    """Where payloads live (``PAYLOAD_LOCATION``)."""

    @classmethod
    def parse(cls, text: str, setting: str = 'PAYLOAD_LOCATION'
              ) -> PayloadRoot:
        return super().parse(text, setting)

    def holds(self, loc: Any) -> bool:
        """True when ``loc`` names a payload file directly under this root."""
        if str(loc.storage_type) != self.storage_type or \
                (loc.bucket_name or None) != self.bucket_name:
            return False
        directory, name = posixpath.split(loc.key)
        return directory == self.prefix and bool(_NAME.match(name))


def configured_root() -> PayloadRoot | None:
    text = config.get('PAYLOAD_LOCATION')
    return PayloadRoot.parse(text) if text else None


def is_reference(payload: Any) -> bool:
    return isinstance(payload, dict) and REF_KEY in payload


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(',', ':')).encode()


def offload(payload: dict, task_id: str, owner: str = 'worker',
            threshold: int | None = None,
            encoded: bytes | None = None) -> dict:
    """``payload`` itself when it is small (or offloading is off), else the
    reference to a copy stored under PAYLOAD_LOCATION as ``<task_id>.json``.
    ``encoded``: :func:`encode` of ``payload``, when the caller has it.
    """
    if is_reference(payload) or not isinstance(payload, dict):
        return payload
    if owner not in OWNERS:
        raise ValueError(f'owner must be one of {OWNERS}, got {owner!r}')
    limit = config.get('PAYLOAD_OFFLOAD_BYTES') if threshold is None \
        else threshold
    if limit <= 0:
        return payload
    data = encode(payload) if encoded is None else encoded
    if len(data) <= limit:
        return payload
    root = configured_root()
    if root is None:
        logger.warning(
            'Payload of task %s is %d bytes (over PAYLOAD_OFFLOAD_BYTES = %d) '
            'but PAYLOAD_LOCATION is not set, so it goes through the broker; '
            'set SPACER_PAYLOAD_LOCATION to keep it out of Redis.',
            task_id, len(data), limit)
        return payload
    if not _NAME.match(f'{task_id}.json'):
        raise MessageError(f'task id {task_id!r} cannot name a payload file.')
    loc = root.location(f'{task_id}.json')
    store_bytes(loc, data)
    ref: dict[str, Any] = {REF_KEY: {
        'version': VERSION, 'location': loc.serialize(), 'bytes': len(data),
        'sha256': hashlib.sha256(data).hexdigest(), 'owner': owner}}
    if 'task_name' in payload:   # a JobMsg: routing reads its task_name
        ref['task_name'] = payload['task_name']
    return ref


def reference_location(ref: dict) -> Any:
    """The DataLocation a reference names (unchecked)."""
    info = ref.get(REF_KEY)
    if not isinstance(info, dict):
        raise PayloadError(f'{REF_KEY} must be an object, got '
                           f'{type(info).__name__}.')
    try:
        return DataLocation.deserialize(info.get('location'))
    except Exception as e:
        raise PayloadError(f'{REF_KEY}.location is not a DataLocation: '
                           f'{e}') from e


def _checked(ref: dict) -> tuple[Any, int, str]:
    info = ref.get(REF_KEY)
    loc = reference_location(ref)
    if info.get('version') != VERSION:
        raise PayloadError(f"{REF_KEY} version {info.get('version')!r} is "
                           f"not supported (this worker reads {VERSION}).")
    size, digest = info.get('bytes'), info.get('sha256')
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PayloadError(f'{REF_KEY}.bytes must be a size in bytes, got '
                           f'{size!r}.')
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise PayloadError(f'{REF_KEY}.sha256 must be 64 hex digits.')
    root = configured_root()
    if root is None:
        raise PayloadError(
            f'The payload was stored at {loc.key!r} ({loc.storage_type}), but '
            f'this worker has no PAYLOAD_LOCATION, so it reads no stored '
            f'payloads; set SPACER_PAYLOAD_LOCATION as on the clients.')
    if not root.holds(loc):
        raise PayloadError(
            f'The payload location {loc!r} is outside this worker\'s '
            f'PAYLOAD_LOCATION ({root}); it was not read.')
    limit = config.get('PAYLOAD_MAX_BYTES')
    if size > limit:
        raise PayloadError(
            f'The stored payload is {size} bytes, over PAYLOAD_MAX_BYTES '
            f'({limit}); it was not read.')
    return loc, size, digest


def fetch(ref: dict) -> Any:
    """The payload a reference stands for, after every check."""
    loc, size, digest = _checked(ref)
    data = load_bytes(loc)
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise PayloadError(
            f'The stored payload at {loc.key!r} does not match its reference '
            f'({len(data)} bytes, expected {size}, or another sha256); it '
            f'was changed after it was sent.')
    try:
        return json.loads(data)
    except ValueError as e:
        raise PayloadError(f'The stored payload at {loc.key!r} is not JSON: '
                           f'{e}') from e


def owner(ref: Any) -> str | None:
    info = ref.get(REF_KEY) if is_reference(ref) else None
    return info.get('owner') if isinstance(info, dict) else None


def discard(ref: Any) -> None:
    """Delete the stored payload of ``ref`` (missing: fine). Errors are
    logged, not raised: the answer matters more than the clean-up."""
    if not is_reference(ref):
        return
    try:
        loc = reference_location(ref)
        root = configured_root()
        if root is None or not root.holds(loc):
            logger.warning('Not deleting payload %r: outside '
                           'PAYLOAD_LOCATION.', loc)
            return
        delete(loc)
    except Exception as e:  # clean-up only; the job's answer stands
        logger.warning('Could not delete stored payload of %s: %s: %s',
                       ref.get(REF_KEY), type(e).__name__, e)


# --- results that do not repeat the payload ----------------------------------

def compact_job(job: Any) -> Any:
    """A JobMsg whose tasks keep everything but their bulk: a training's
    labels are emptied (point lists stay: they are bounded per image, and
    CoralNet checks them against its database). Same JSON shape, readable
    by PySpacer; the caller keeps (or re-reads) the full job."""
    tasks = []
    for task in job.tasks:
        if hasattr(task, 'labels'):
            task = dataclasses.replace(task, labels=TrainingTaskLabels(
                train=ImageLabels({}), ref=ImageLabels({}),
                val=ImageLabels({})))
        tasks.append(task)
    return JobMsg(task_name=job.task_name, tasks=tasks)
