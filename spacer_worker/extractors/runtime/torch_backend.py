"""The PyTorch backend: eager PyTorch on CUDA (or CPU on request).

Only this module (and :mod:`.torch_folded`) imports torch on the engine's
path; a CPU worker with ONNX Runtime never loads it. :mod:`.backends` says
how the two backends compare.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import numpy as np
import torch

from spacer_worker.extractors.runtime.folded import FoldedNetwork
from spacer_worker.extractors.runtime.torch_folded import FoldedEfficientNet

logger = logging.getLogger(__name__)


class TorchBackend:
    name = 'torch'
    streams = 1  # PyTorch splits each batch over its own threads

    def __init__(self, net: FoldedNetwork, device: torch.device,
                 precision: str, threads: int):
        self.device = device
        self.dtype = torch.float16 if precision == 'fp16' else torch.float32
        if device.type == 'cpu':
            torch.set_num_threads(threads)
            _keep_large_buffers()
        elif self.dtype == torch.float32:
            _full_float32_on_cuda()
        self._net = FoldedEfficientNet(net).to(device=device, dtype=self.dtype,
                           memory_format=torch.channels_last).eval()
        self.default_batch_size = 16 if device.type == 'cpu' else 128

    def run(self, patches: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(patches).to(self.device, non_blocking=True)
            # NHWC bytes viewed as NCHW: already channels_last in memory
            # (a fourth, padding channel is dropped).
            x = x.permute(0, 3, 1, 2)[:, :3].to(torch.float32).div_(255)
            features = self._net(x.to(self.dtype))
            return features.float().cpu().numpy()


def _full_float32_on_cuda() -> None:
    """Keep float32 convolutions in float32 on CUDA.

    PyTorch lets cuDNN run float32 convolutions as TF32 (10-bit mantissa)
    on Ampere and later GPUs by default: features ~1e-3 relative off, a
    hundred times PySpacer's float32 error. fp32 must mean float32
    arithmetic (fp16 is the setting for speed at that cost).
    """
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is not None and hasattr(conv, 'fp32_precision'):
        # PyTorch refuses a mix of this API and the allow_tf32 flags.
        conv.fp32_precision = 'ieee'
        torch.backends.cuda.matmul.fp32_precision = 'ieee'
    else:  # PyTorch before 2.9
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


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
