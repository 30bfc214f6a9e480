"""Extractor weights: fetch, verify, cache, unpickle safely.

Local weights (filesystem, memory) are read where they are. Remote weights
(s3, url) are downloaded once into EXTRACTORS_CACHE_DIR, into a folder of
their own location: its file name (for people) plus a digest of its storage
type, bucket and key, each copy named by its sha256. A cached file is thus
trusted only for the exact location it came from: a message naming
``url:https://evil/efficientnet_b0_ver1.pt`` fills another folder than
``s3://prod/efficientnet_b0_ver1.pt`` (PySpacer keys by file name alone, so
one would serve the other). Several worker processes on one host
may fill the cache at once: a file lock serialises the download and the
file appears atomically (temp file + rename), so nobody reads half a file.

Whenever ``data_hashes`` gives a sha256 for the weights, the bytes are
checked against it, cached copies included (PySpacer skips that on a cache
hit): a cached copy that does not match is evicted and downloaded again;
freshly fetched bytes that do not match raise HashMismatchError and are
never cached.

Nothing a message says becomes a path here unchecked: a hash is used only
when it is 64 lowercase hex digits (else HashMismatchError, before any
file is touched), the folder's readable part keeps only ``[A-Za-z0-9._-]``
of the file name, and every removal (a damaged copy, an older one, an
eviction) is of a regular file directly inside its location's folder under
EXTRACTORS_CACHE_DIR, never through a symbolic link.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from filelock import FileLock, Timeout

from spacer_worker import config
from spacer_worker.exceptions import (
    ConfigError,
    HashMismatchError,
    StorageUnavailableError,
    WeightsLoadError,
)
from spacer_worker.extractors.runtime import pt_reader
from spacer_worker.extractors.runtime.architecture import strip_data_parallel
from spacer_worker.extractors.runtime.pt_reader import PtFormatError
from spacer_worker.storage import load_bytes, storage_factory

if TYPE_CHECKING:
    import torch

    from spacer_worker.data_classes import DataLocation

logger = logging.getLogger(__name__)


class ExtractorFiles(Protocol):
    """An extractor description as the runtime sees it: its data files
    and their expected sha256 (``FeatureExtractor`` is one). The runtime
    types against this, never the descriptions, which call down into it."""

    data_locations: Mapping[str, DataLocation]
    data_hashes: Mapping[str, str]

CACHE_LOCK_TIMEOUT = 900.0  # seconds to wait for another process's download
_SHA256 = re.compile(r'[0-9a-f]{64}')
_UNSAFE = re.compile(r'[^A-Za-z0-9._-]')
_NAME_CHARS = 64   # of the readable part of a folder name


@dataclass(frozen=True)
class Weights:
    data: bytes
    sha256: str
    loaded_remotely: bool  # downloaded by this call (a cache miss)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def location_dir(loc: DataLocation) -> Path:
    """The cache folder of one remote location on this host."""
    directory = config.get('EXTRACTORS_CACHE_DIR')
    if not directory:
        raise ConfigError(
            f"Extractor data at {loc.storage_type} location {loc.key!r} is "
            f"remote: set EXTRACTORS_CACHE_DIR (SPACER_EXTRACTORS_CACHE_DIR) "
            f"to a local directory where it can be cached.")
    name = loc.filename
    if not name or name in ('.', '..'):
        raise ConfigError(
            f"Cannot cache extractor data from {loc.key!r}: its location has "
            f"no file name to cache it under.")
    # For people only: the digest makes the folder the location's own.
    readable = _UNSAFE.sub('_', name)[:_NAME_CHARS].lstrip('.') or 'data'
    kind = str(getattr(loc.storage_type, 'value', loc.storage_type))
    identity = json.dumps([kind, loc.bucket_name or '', loc.key])
    digest = hashlib.sha256(identity.encode('utf-8')).hexdigest()[:32]
    return Path(directory) / f'{readable}.{digest}'


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a sha256 as hexdigest() spells it."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def cache_path(loc: DataLocation, sha256: str) -> Path:
    """Where the copy of ``loc`` with content ``sha256`` is cached."""
    if not is_sha256(sha256):
        raise HashMismatchError(
            f"{sha256!r:.80} is not a sha256 (64 lowercase hex digits): it "
            f"names no cached copy of {loc.key!r}.")
    return location_dir(loc) / sha256


def _entries(folder: Path) -> list[Path]:
    """The cached copies in ``folder``: regular files (never links) named
    as a sha256."""
    found = []
    for path in folder.iterdir():
        if is_sha256(path.name) and not path.is_symlink() and path.is_file():
            found.append(path)
    return found


def _remove(folder: Path, path: Path) -> None:
    """Remove one cached copy: only a file (or link) directly inside
    ``folder``, itself a folder of the cache (never a message's path)."""
    root = os.path.realpath(str(config.get('EXTRACTORS_CACHE_DIR') or ''))
    if os.path.dirname(os.path.realpath(folder)) != root or \
            path.parent != folder or not is_sha256(path.name):
        raise ConfigError(f"Refusing to remove {path}: not a cached copy "
                          f"under EXTRACTORS_CACHE_DIR ({root}).")
    path.unlink(missing_ok=True)


def _cached_copy(folder: Path, expected: str | None) -> Weights | None:
    # With a hash, only that copy; without, the newest copy of this
    # location. A copy whose bytes do not match its name is damaged.
    if expected is not None:
        candidates = [folder / expected]
    else:
        candidates = sorted(_entries(folder),
                            key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in candidates:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        actual = sha256_of(data)
        if actual == path.name:
            return Weights(data, actual, loaded_remotely=False)
        logger.warning("Cached %s has sha256 %s, not its name: evicting it.",
                       path, actual)
        _remove(folder, path)
    return None


def _mismatch(extractor: ExtractorFiles, key: str, actual: str,
              expected: str) -> HashMismatchError:
    return HashMismatchError(
        f"{type(extractor).__name__}: the {key!r} data at "
        f"{extractor.data_locations[key]!r} has sha256 {actual}, but "
        f"data_hashes says {expected}. The file changed or is corrupt: fix "
        f"the file or the hash in the message.")


def expected_hash(extractor: ExtractorFiles, key: str) -> str | None:
    """The sha256 ``data_hashes`` gives for ``key``, or None; a value that
    is not a sha256 is refused before it can name any file."""
    expected = extractor.data_hashes.get(key)
    if expected is None or is_sha256(expected):
        return expected
    raise HashMismatchError(
        f"{type(extractor).__name__}: data_hashes[{key!r}] = "
        f"{expected!r:.80} is not a sha256 (64 lowercase hex digits, as "
        f"hashlib's hexdigest() writes it), so no data can match it: fix "
        f"the hash in the message.")


def fetch(extractor: ExtractorFiles, key: str = 'weights') -> Weights:
    """The verified bytes of ``extractor.data_locations[key]``."""
    loc = extractor.data_locations[key]
    expected = expected_hash(extractor, key)
    if not loc.is_remote:
        data = load_bytes(loc)
        actual = sha256_of(data)
        if expected is not None and actual != expected:
            raise _mismatch(extractor, key, actual, expected)
        return Weights(data, actual, loaded_remotely=False)
    return _fetch_remote(extractor, key, loc, expected)


def _fetch_remote(extractor: ExtractorFiles, key: str, loc: DataLocation,
                  expected: str | None) -> Weights:
    folder = location_dir(loc)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f'{folder}.lock', timeout=CACHE_LOCK_TIMEOUT)
    try:
        with lock:
            cached = _cached_copy(folder, expected)
            if cached is not None:
                return cached
            data = load_bytes(loc)
            actual = sha256_of(data)
            if expected is not None and actual != expected:
                raise _mismatch(extractor, key, actual, expected)
            # The cache writes are the worker's own, not the message's.
            storage_factory('filesystem').store(str(folder / actual), data)
            for older in _entries(folder):
                if older.name != actual:
                    _remove(folder, older)
            return Weights(data, actual, loaded_remotely=True)
    except Timeout as e:
        raise StorageUnavailableError(
            f"Waited {CACHE_LOCK_TIMEOUT:.0f} s for another process to finish "
            f"caching into {folder}; if no process is downloading, delete "
            f"{folder}.lock.") from e


def evict(extractor: ExtractorFiles, key: str = 'weights') -> None:
    """Remove a remote location's cached copy (no-op for local ones)."""
    loc = extractor.data_locations[key]
    if loc.is_remote:
        folder = location_dir(loc)
        if folder.is_dir() and not folder.is_symlink():
            for path in _entries(folder):
                _remove(folder, path)


def _safe_globals() -> list[Any]:
    # Weight files written with numpy values beside the state dict (epoch
    # counters, accuracies) need these to unpickle with weights_only=True.
    allowed: list[Any] = [np.dtype, codecs.encode, np._core.multiarray.scalar,
                          (np._core.multiarray.scalar,
                           'numpy.core.multiarray.scalar')]
    for name in ('Float64DType', 'Float32DType', 'Int64DType', 'Int32DType'):
        allowed.append(getattr(np.dtypes, name))
    return allowed


def _unsafe(where: str, e: Exception) -> WeightsLoadError:
    logger.warning('Loading the weights at %s failed: %s', where,
                   str(e).splitlines()[0] if str(e) else type(e).__name__)
    return WeightsLoadError(
        f"Extractor weights at {where} are not a PyTorch file that can be "
        f"loaded safely (as torch.load with weights_only=True loads): "
        f"{type(e).__name__} (the worker's log has the detail).")


def _net_of(content: Any, where: str) -> dict[str, Any]:
    if not isinstance(content, dict) or not isinstance(content.get('net'), dict):
        raise WeightsLoadError(
            f"Extractor weights at {where} must hold {{'net': state_dict}} "
            f"as PySpacer writes them; found "
            f"{sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__}.")
    return strip_data_parallel(content['net'])


def load_arrays(weights: Weights, where: str) -> dict[str, np.ndarray]:
    """The ``net`` state dict of a PySpacer weights file as numpy arrays,
    without torch (:mod:`.pt_reader`: the refusals and bounds of
    ``torch.load(weights_only=True)``), without any DataParallel
    ``module.`` prefix; checked as :func:`load_state_dict` checks."""
    try:
        content = pt_reader.load(weights.data)
    except PtFormatError as e:
        raise _unsafe(where, e) from e
    state = _net_of(content, where)
    not_arrays = [k for k, v in state.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise WeightsLoadError(
            f"Extractor weights at {where}: the state dict holds "
            f"{len(not_arrays)} entries that are not tensors (first: "
            f"{not_arrays[0]!r}).")
    _check_state(where, [(name, a.size, a.dtype.kind == 'f'
                          and not np.isfinite(a).all(), a)
                         for name, a in state.items()])
    return state


def load_state_dict(weights: Weights, where: str) -> dict[str, torch.Tensor]:
    """The ``net`` state dict of a PySpacer weights file, safely unpickled
    (``weights_only=True``), without any DataParallel ``module.`` prefix.

    For custom PyTorch extractors (``TorchExtractor``); the EfficientNet
    engine reads with :func:`load_arrays`. Both refuse the same files.
    """
    # torch loads here, not with the module: a pool process that sends its
    # patches to a shared network server fetches weights but never runs them.
    import torch

    try:
        # Our bounds first, building nothing: torch.load allocates what
        # the file declares.
        pt_reader.load(weights.data, materialize=False)
    except PtFormatError as e:
        raise _unsafe(where, e) from e
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            content = torch.load(io.BytesIO(weights.data), map_location='cpu',
                                 weights_only=True)
    except Exception as e:
        # torch.load fails on foreign bytes in many ways (UnpicklingError,
        # RuntimeError, BadZipFile, IndexError...): all mean the same here.
        raise _unsafe(where, e) from e
    state = _net_of(content, where)
    # Sizes first: a zero-stride tensor may claim more elements than any
    # check could visit (torch.load allows it; pt_reader does not).
    tensors = [(n, t) for n, t in state.items() if isinstance(t, torch.Tensor)]
    _check_state(where, [(n, t.numel(), False, t) for n, t in tensors])
    _check_state(where, [(n, t.numel(), t.is_floating_point()
                          and not bool(torch.isfinite(t).all()), t)
                         for n, t in tensors])
    return state


def _check_state(where: str, tensors: list[tuple[str, int, bool, Any]]
                 ) -> None:
    """Refuse a state over :data:`pt_reader.MAX_ELEMENTS` elements, or
    holding NaN or infinity: every feature would be NaN, and the failure
    would surface only in training or scoring, far from its cause (a
    damaged file, or one saved from a training that diverged)."""
    total = sum(count for _, count, _, _ in tensors)
    if total > pt_reader.MAX_ELEMENTS:
        raise WeightsLoadError(
            f"Extractor weights at {where} hold {total} values, over the "
            f"limit of {pt_reader.MAX_ELEMENTS}: not an extractor's weights.")
    bad = [(name, count, t) for name, count, nonfinite, t in tensors
           if nonfinite]
    if bad:
        name, size, t = bad[0]
        count = int(size - np.isfinite(np.asarray(t)).sum())
        raise WeightsLoadError(
            f"Extractor weights at {where} hold NaN or infinite values in "
            f"{len(bad)} tensor(s) (first: {name}, {count} of {size}): the "
            f"file is damaged or was saved from a training that diverged, "
            f"and every feature would be NaN. Use another weights file.")
