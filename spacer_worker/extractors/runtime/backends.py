"""Two ways to run the folded network on a batch of uint8 patches.

* ``OnnxRuntimeBackend`` (CPU): ONNX Runtime on a graph written from the
  folded parameters, uint8 patches in, features out. The fastest on CPU
  (~1.5x eager PyTorch here), small batches suit it best, and it uses its
  own allocator. The early blocks run one patch at a time and the late
  ones on the whole batch (see ``onnx_graph.SPLIT_BLOCK``). It runs one
  batch per thread (``streams``), each on one core, rather than one batch
  split over every core: the late layers (7x7 maps, 1x1 squeeze-excite
  convs) are too small to split well, and threads that wait for each
  other at each of ~400 nodes spin on a core someone else may need (3x
  slower on a loaded machine). Each graph is ONNX Runtime's own optimized
  one with the squeeze-excite gates kept in its blocked layout
  (``blocked_gates``), where that gives the same features bit for bit.
* ``TorchBackend`` (:mod:`.torch_backend`, CPU or CUDA; torch only
  there, from the ``gpu`` extra): eager PyTorch, channels_last, in
  ``inference_mode``; optional fp16 on CUDA. On CPU it raises glibc's mmap
  threshold so activation buffers are reused instead of being mapped and
  unmapped each batch (millions of page faults otherwise).

Both take ``[b, 224, 224, 3]`` uint8 and return ``[b, 1280]`` float32, with
the same [0, 1] scaling as PySpacer (uint8 / 255 in float32, no
normalisation).

fp16 (EXTRACT_PRECISION=fp16, CUDA only) trades exactness for speed: half
precision keeps ~3 significant digits, so features drift from fp32 by
about 1e-3 relative, far beyond the float32 error that fp32 keeps (as
close to a float64 run as PySpacer's own). Use it only where classifiers are trained on fp16 features too.
``benchmarks/extraction.py --device cuda`` prints the measured drift (max
and mean absolute difference from fp32 over the same patches).
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from spacer_worker.extractors.runtime.folded import FoldedNetwork

logger = logging.getLogger(__name__)

class Backend(Protocol):
    name: str
    default_batch_size: int
    streams: int  # batches run() may work on at once, from as many threads

    def run(self, patches: np.ndarray) -> np.ndarray:
        """[b, 224, 224, 3 or 4] uint8 (a 4th channel: padding, ignored)
        -> [b, 1280] float32."""


class OnnxRuntimeBackend:
    name = 'onnxruntime'
    default_batch_size = 4

    def __init__(self, net: FoldedNetwork, threads: int,
                 blocked_gates: bool = True):
        # Lazy: onnx/onnxruntime load only when the ONNX backend is chosen.
        from spacer_worker.extractors.runtime.blocked_gates import (
            blocked_gate_model,
        )
        from spacer_worker.extractors.runtime.onnx_graph import (
            ACTIVATION_NAME,
            INPUT_NAME,
            INPUT_SHAPE,
            build_split_models,
        )
        from spacer_worker.extractors.runtime.ort_session import ort_session

        def fastest(model: bytes, probe: dict[str, np.ndarray]
                    ) -> tuple[object, bool]:
            # (session, gates blocked?): the gates in ORT's blocked layout
            # where that reproduces the plain model exactly (blocked_gates
            # says why and how).
            blocked = None
            if blocked_gates:
                try:
                    blocked = blocked_gate_model(model, probe, ort_session)
                except Exception:  # noqa: BLE001 - a speed-up, not a need
                    logger.warning('ONNX Runtime graph rewrite failed; '
                                   'running the plain graph (about 5% '
                                   'slower).', exc_info=True)
            if blocked is None:
                return ort_session(model), False
            return blocked.session, True

        self._input = INPUT_NAME
        self._activations = ACTIVATION_NAME
        # Early blocks one patch at a time, late blocks on the whole batch
        # (onnx_graph.SPLIT_BLOCK says why).
        front, back = build_split_models(net)
        probe = np.random.default_rng(0).integers(
            0, 256, (2, *INPUT_SHAPE), dtype=np.uint8)
        self._front, front_blocked = fastest(front, {INPUT_NAME: probe[:1]})
        activations = np.concatenate([
            self._front.run(None, {INPUT_NAME: probe[i:i + 1]})[0]
            for i in range(len(probe))])
        self._back, back_blocked = fastest(
            back, {ACTIVATION_NAME: activations})
        # Both graphs' gates (the benchmark prints it).
        self.blocked_gates = front_blocked and back_blocked
        self.streams = max(1, threads)

    def run(self, patches: np.ndarray) -> np.ndarray:
        patches = np.ascontiguousarray(patches)
        activations = np.concatenate([
            self._front.run(None, {self._input: patches[i:i + 1]})[0]
            for i in range(len(patches))])
        return self._back.run(None, {self._activations: activations})[0]
