"""Two ways to run the folded network on a batch of uint8 patches.

* ``OnnxRuntimeBackend`` (CPU): PyTorch for the stem, then ONNX Runtime
  on a graph written from the folded parameters. The fastest on CPU (~1.5x eager PyTorch here), small
  batches suit it best, and it uses its own allocator.
* ``TorchBackend`` (CPU or CUDA): eager PyTorch, channels_last, in
  ``inference_mode``; optional fp16 on CUDA. On CPU it raises glibc's mmap
  threshold so activation buffers are reused instead of being mapped and
  unmapped each batch (millions of page faults otherwise).

Both take ``[b, 224, 224, 3]`` uint8 and return ``[b, 1280]`` float32, with
the same [0, 1] scaling as PySpacer (uint8 / 255 in float32, no
normalisation).

fp16 (EXTRACT_PRECISION=fp16, CUDA only) trades exactness for speed: half
precision keeps ~3 significant digits, so features drift from fp32 by
about 1e-3 relative, far beyond the 1e-4 agreement with PySpacer that fp32
keeps. Use it only where classifiers are trained on fp16 features too.
``benchmarks/extraction.py --device cuda`` prints the measured drift (max
and mean absolute difference from fp32 over the same patches).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Protocol

import numpy as np
import torch

from spacer_worker.extractors.runtime.folded import FoldedEfficientNet

logger = logging.getLogger(__name__)

# x / 255 in float32 for every byte value: one table lookup replaces a
# convert pass and a divide pass, with bit-identical results.
_UNIT_SCALE = np.arange(256, dtype=np.float32) / np.float32(255)


class Backend(Protocol):
    name: str
    default_batch_size: int

    def run(self, patches: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeBackend:
    name = 'onnxruntime'
    default_batch_size = 4

    def __init__(self, net: FoldedEfficientNet, threads: int):
        import onnxruntime as ort

        from spacer_worker.extractors.runtime.onnx_graph import (
            INPUT_NAME,
            build_onnx_model,
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = \
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._input = INPUT_NAME
        self._session = ort.InferenceSession(
            build_onnx_model(net), options, providers=['CPUExecutionProvider'])
        # One PyTorch thread for the (small) stem: idle OpenMP threads
        # spin-wait on the cores ONNX Runtime is about to use.
        torch.set_num_threads(1)
        self._stem = net.stem_forward

    def run(self, patches: np.ndarray) -> np.ndarray:
        # The stem in PyTorch, rounding as PySpacer does (see onnx_graph).
        x = torch.from_numpy(_UNIT_SCALE[patches.transpose(0, 3, 1, 2)])
        with torch.inference_mode():
            x = self._stem(x).contiguous().numpy()
        return self._session.run(None, {self._input: x})[0]


class TorchBackend:
    name = 'torch'

    def __init__(self, net: FoldedEfficientNet, device: torch.device,
                 precision: str, threads: int):
        self.device = device
        self.dtype = torch.float16 if precision == 'fp16' else torch.float32
        if device.type == 'cpu':
            torch.set_num_threads(threads)
            _keep_large_buffers()
        self._net = net.to(device=device, dtype=self.dtype,
                           memory_format=torch.channels_last).eval()
        self.default_batch_size = 16 if device.type == 'cpu' else 128

    def run(self, patches: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(patches).to(self.device, non_blocking=True)
            # NHWC bytes viewed as NCHW: already channels_last in memory.
            x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255)
            features = self._net(x.to(self.dtype))
            return features.float().cpu().numpy()


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _keep_large_buffers() -> None:
    """Stop glibc malloc from mmapping (and unmapping) big buffers.

    The same as GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=<huge>, set from inside the process. Memory
    stays at its peak (one batch of activations) instead of being returned
    to the kernel after every layer. No-op where libc is not glibc.
    """
    path = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    if not ok:
        logger.debug('mallopt refused; extraction may page-fault more.')
