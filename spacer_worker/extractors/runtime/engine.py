"""The per-process network cache and the batched extraction loop.

PySpacer reads and builds the network on every call (~0.3 s and 16 MB of
reading). A worker builds it once per process, keyed by the weights' sha256
and the device/precision/backend it runs on, and reuses it for every later
task. When a message carries the weights' hash, a warm worker does not even
read the weights file again.

Settings (read at each call, so a test or operator can change them):
TORCH_DEVICE ('auto': cuda when torch is installed and sees a GPU),
EXTRACT_PRECISION ('fp32', or 'fp16' on CUDA), EXTRACT_BACKEND ('auto':
ONNX Runtime on CPU when installed, else PyTorch), EXTRACT_BATCH_SIZE (0:
the backend's best), EXTRACT_THREADS (0: every CPU this process may use).

torch is imported only for the PyTorch backend: a CPU worker reads,
checks and folds the weights with numpy (:mod:`.pt_reader`,
:mod:`.folded`) and runs them in ONNX Runtime, so the ``worker`` extra
installs no torch; the ``gpu`` extra adds it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from spacer_worker import config
from spacer_worker.config import telemetry
from spacer_worker.exceptions import ConfigError
from spacer_worker.extractors.runtime import weights as weights_mod
from spacer_worker.extractors.runtime.architecture import FEATURE_DIM
from spacer_worker.extractors.runtime.backends import Backend, OnnxRuntimeBackend
from spacer_worker.extractors.runtime.exact import ExactFallback
from spacer_worker.extractors.runtime.folded import conformed_state, fold_network
from spacer_worker.extractors.runtime.patches import (
    CROP_SIZE,
    iter_patch_batches,
    iter_rgbx_batches,
)
from spacer_worker.metrics import recording
from spacer_worker.storage.pixel_arrays import rgbx_array, row_decoder

if TYPE_CHECKING:
    from spacer_worker.extractors.runtime.weights import ExtractorFiles

logger = logging.getLogger(__name__)

MAX_CACHED_NETWORKS = 2
PRECISIONS = ('fp32', 'fp16')
BACKENDS = ('auto', 'onnxruntime', 'torch')


@dataclass(frozen=True)
class RuntimeSettings:
    device: str       # 'cpu', 'cuda', 'cuda:1'...
    precision: str    # 'fp32' | 'fp16'
    backend: str      # 'onnxruntime' | 'torch'
    threads: int
    batch_size: int   # 0: the backend's default
    # Features beyond this are recomputed in float64 (non-finite ones
    # always): EXTRACT_FLOAT64_ABOVE for fp32; inf for fp16 or 0.
    float64_above: float
    blocked_gates: bool  # EXTRACT_BLOCKED_GATES (ONNX Runtime only)


def _onnxruntime_available() -> bool:
    try:  # a probe: are the optional ONNX packages installed?
        import onnx  # noqa: F401
        telemetry.onnxruntime()
    except ImportError:
        return False
    return True


@functools.cache
def _torch() -> Any:
    """torch, or None where it is not installed (the ``worker`` extra)."""
    try:  # a probe: the gpu extra installs it
        import torch
    except ImportError:
        return None
    return torch


_DEVICE = re.compile(r'cpu|cuda(:\d+)?')
NO_TORCH = ("torch is not installed here (the 'worker' extra runs on CPU "
            "without it): pip install 'spacer_worker[gpu]' for CUDA or the "
            "PyTorch backend.")


def _device(requested: str) -> str:
    torch = _torch()
    if requested == 'auto':
        return 'cuda' if torch is not None and torch.cuda.is_available() \
            else 'cpu'
    if torch is None:
        if not _DEVICE.fullmatch(requested):
            raise ConfigError(f"TORCH_DEVICE={requested!r} is not a torch device; "
                              f"use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        if requested != 'cpu':
            raise ConfigError(f"TORCH_DEVICE={requested!r}: {NO_TORCH}")
        return requested
    try:
        device = str(torch.device(requested))
    except RuntimeError as e:
        raise ConfigError(
            f"TORCH_DEVICE={requested!r} is not a torch device; use "
            f"'auto', 'cpu', 'cuda' or 'cuda:N'.") from e
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(
            f"TORCH_DEVICE={requested!r} but this torch build sees no CUDA "
            f"GPU; set TORCH_DEVICE=auto or cpu.")
    return device


def runtime_settings() -> RuntimeSettings:
    """Resolve and check the extraction settings for this process."""

    requested = (config.get('TORCH_DEVICE') or 'auto').strip().lower()
    device = _device(requested)
    precision = (config.get('EXTRACT_PRECISION') or 'fp32').strip().lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"EXTRACT_PRECISION={precision!r}: expected one "
                          f"of {', '.join(PRECISIONS)}.")
    if precision == 'fp16' and not device.startswith('cuda'):
        raise ConfigError(
            f"EXTRACT_PRECISION=fp16 needs a CUDA device, but extraction runs "
            f"on {device!r}; use fp32 on CPU.")
    backend = (config.get('EXTRACT_BACKEND') or 'auto').strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(f"EXTRACT_BACKEND={backend!r}: expected one of "
                          f"{', '.join(BACKENDS)}.")
    if backend == 'auto':
        backend = ('onnxruntime' if device == 'cpu' and _onnxruntime_available()
                   else 'torch')
    elif backend == 'onnxruntime':
        if device != 'cpu':
            raise ConfigError(
                f"EXTRACT_BACKEND=onnxruntime runs on CPU only, but "
                f"TORCH_DEVICE resolves to {device!r}.")
        if not _onnxruntime_available():
            raise ConfigError(
                "EXTRACT_BACKEND=onnxruntime but onnxruntime/onnx are not "
                "installed: pip install 'spacer_worker[worker]'.")
    if backend == 'torch' and _torch() is None:
        raise ConfigError(f"EXTRACT_BACKEND resolves to 'torch': {NO_TORCH}")
    threads = config.get('EXTRACT_THREADS')
    if threads < 0:
        raise ConfigError(f"EXTRACT_THREADS={threads}: expected 0 (all CPUs) "
                          f"or a positive count.")
    batch_size = config.get('EXTRACT_BATCH_SIZE')
    if batch_size < 0:
        raise ConfigError(f"EXTRACT_BATCH_SIZE={batch_size}: expected 0 "
                          f"(automatic) or a positive count.")
    float64_above = config.get('EXTRACT_FLOAT64_ABOVE')
    if not float64_above >= 0:  # NaN too
        raise ConfigError(f"EXTRACT_FLOAT64_ABOVE={float64_above}: expected "
                          f"a feature size (100 by default), or 0 for off.")
    if precision != 'fp32' or float64_above == 0:
        # fp16 gives up exactness by choice; 0 turns the path off.
        float64_above = math.inf
    return RuntimeSettings(device, precision, backend,
                           threads or len(os.sched_getaffinity(0)), batch_size,
                           float64_above, config.get('EXTRACT_BLOCKED_GATES'))


class Network:
    """A built network for one weights file on one device."""

    def __init__(self, backend: Backend, settings: RuntimeSettings,
                 sha256: str, exact: ExactFallback):
        self.backend = backend
        self.exact = exact
        self.settings = settings
        self.sha256 = sha256
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def batch_size(self) -> int:
        return (config.get('EXTRACT_BATCH_SIZE')
                or self.backend.default_batch_size)

    def run_patches(self, patches: np.ndarray) -> np.ndarray:
        """[b, 224, 224, 3 or 4] uint8 -> [b, 1280] float32 (see Backend)."""
        features = self.backend.run(patches)
        self.exact.refine(patches, features)
        return features

    def extract(self, im: Image.Image, rowcols: Sequence[tuple[int, int]]
                ) -> np.ndarray:
        """Features of the patches of ``im`` at ``rowcols``, in order.

        Patches are cut one batch at a time while the backend's streams
        run the batches before, so memory stays at a few batches whatever
        the number of points. From an image decoded into an array (or
        still being decoded: ``storage.pixel_arrays``) they are sliced
        from it, the top rows' patches first, decoding rows as they are
        needed; else Pillow crops them, in order.
        """
        out = np.empty((len(rowcols), FEATURE_DIM), np.float32)
        streams = max(1, getattr(self.backend, 'streams', 1))
        decoder = row_decoder(im)
        pixels = decoder.array if decoder is not None else rgbx_array(im)
        batches: Iterator[tuple[np.ndarray | slice, np.ndarray]]
        if pixels is not None:
            # Every backend takes a padding byte per pixel. A buffer per
            # stream and one being cut: the loop below collects a batch
            # before its buffer comes round again.
            batches = iter_rgbx_batches(
                pixels, rowcols, self.batch_size(), buffers=streams + 1,
                decode_to=decoder.decode_to if decoder else None)
        else:
            batches = _in_order(iter_patch_batches(
                im, rowcols, self.batch_size(), CROP_SIZE))
        if streams == 1:
            for where, batch in batches:
                out[where] = self.run_patches(batch)
            return out
        pool = self._executor(streams)
        pending: deque[tuple[np.ndarray | slice, Future]] = deque()
        try:
            for where, batch in batches:
                pending.append((where, pool.submit(self.run_patches, batch)))
                # One batch per stream in flight, plus the one being cut.
                while len(pending) > streams:
                    _collect(out, *pending.popleft())
            while pending:
                _collect(out, *pending.popleft())
        finally:
            for _where, future in pending:
                future.cancel()
        return out

    def _executor(self, streams: int) -> ThreadPoolExecutor:
        # Its idle threads end when the network is dropped from the cache
        # and collected (the executor's own weak-reference callback).
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=streams, thread_name_prefix='extract')
            return self._pool


def _in_order(batches: Iterator[np.ndarray]
              ) -> Iterator[tuple[slice, np.ndarray]]:
    start = 0
    for batch in batches:
        yield slice(start, start + len(batch)), batch
        start += len(batch)


def _collect(out: np.ndarray, where: np.ndarray | slice, future: Future
             ) -> None:
    out[where] = future.result()


_cache: OrderedDict[tuple, Network] = OrderedDict()
_cache_pid = os.getpid()
_lock = threading.Lock()


def _key(sha256: str, settings: RuntimeSettings) -> tuple:
    # Every setting a network is built with: a changed one builds anew
    # rather than running on a network made for another.
    return (sha256, settings.device, settings.precision, settings.backend,
            settings.threads, settings.float64_above, settings.blocked_gates)


def _cached(key: tuple) -> Network | None:
    global _cache_pid
    if _cache_pid != os.getpid():
        # Forked: thread pools and sessions do not survive a fork.
        _cache.clear()
        _cache_pid = os.getpid()
    network = _cache.get(key)
    if network is not None:
        _cache.move_to_end(key)
    return network


def _build(weights: weights_mod.Weights, settings: RuntimeSettings,
           where: str) -> Network:

    state = conformed_state(weights_mod.load_arrays(weights, where), where)
    folded = fold_network(state)
    if settings.backend == 'onnxruntime':
        backend: Backend = OnnxRuntimeBackend(
            folded, settings.threads, blocked_gates=settings.blocked_gates)
    else:
        import torch

        from spacer_worker.extractors.runtime.torch_backend import TorchBackend
        backend = TorchBackend(folded, torch.device(settings.device),
                               settings.precision, settings.threads)
    # fp32 must stay as accurate as PySpacer's float32 on every patch
    # (exact.py says why it needs help); non-finite rows on any network.
    exact = ExactFallback(state, settings.float64_above)
    return Network(backend, settings, weights.sha256, exact)


def get_network(extractor: ExtractorFiles) -> tuple[Network, bool]:
    """This process's network for ``extractor``, built on first use.

    Returns it and whether its weights were downloaded by this call. (A
    pool process of a worker with a shared network server asks
    ``shared.remote_network`` instead.)
    """
    settings = runtime_settings()
    expected = weights_mod.expected_hash(extractor, 'weights')
    with _lock:
        if expected is not None:
            network = _cached(_key(expected, settings))
            if network is not None:
                recording.cache_lookup('network', hit=True)
                return network, False
    weights = weights_mod.fetch(extractor, 'weights')
    network = network_for(weights, repr(extractor.data_locations['weights']),
                          settings)
    return network, weights.loaded_remotely


def cached_network(sha256: str) -> Network | None:
    """This process's network for weights ``sha256`` on the configured
    device, if it was built already."""
    settings = runtime_settings()
    with _lock:
        return _cached(_key(sha256, settings))


def network_for(weights: weights_mod.Weights, where: str,
                settings: RuntimeSettings | None = None) -> Network:
    """This process's network for verified ``weights``, built (and
    cached) on first use; ``where`` names their location in errors."""
    settings = settings or runtime_settings()
    key = _key(weights.sha256, settings)
    with _lock:
        network = _cached(key)
        if network is not None:
            recording.cache_lookup('network', hit=True)
            return network
        recording.cache_lookup('network', hit=False)
        start = time.perf_counter()
        network = _build(weights, settings, where)
        _cache[key] = network
        while len(_cache) > MAX_CACHED_NETWORKS:
            _cache.popitem(last=False)
        logger.info("Built EfficientNet-b0 (%s, %s, %s, sha256 %s...) in "
                    "%.2f s.", settings.backend, settings.device,
                    settings.precision, weights.sha256[:12],
                    time.perf_counter() - start)
        return network


def preload(extractor: ExtractorFiles) -> Network:
    """Build and cache ``extractor``'s network now (worker start-up)."""
    return get_network(extractor)[0]


def clear_cache() -> None:
    """Forget every built network (tests; freeing GPU memory)."""
    with _lock:
        _cache.clear()
