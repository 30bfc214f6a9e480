"""PySpacer's EfficientNet-b0, unfolded, run in numpy.

Two users need the network as PySpacer defines it rather than the fast
folded graph, and neither may need torch:

* the float64 path (:mod:`.exact`): patches float32 cannot carry are run
  again in float64, the truth PySpacer's own float32 approximates;
* weight calibration (:mod:`.calibration`): each batch norm's statistics
  are measured on image patches in training mode, layer after layer.

Activations are NHWC, so 1x1 convolutions are matrix products over the
channels; a depthwise conv is the sum of k*k shifted products of the map
(as fast as any kernel in float64, and exact). The batch norm is a hook,
so calibration can swap in batch statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from spacer_worker.extractors.runtime.architecture import (
    BN_EPS,
    block_specs,
    same_padding,
)

# (state prefix of the batch norm, activations [N, H, W, C]) -> normalised
BatchNormHook = Callable[[str, np.ndarray], np.ndarray]


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over='ignore'):  # exp(-x) -> inf: the product is 0
        return x / (1 + np.exp(-x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over='ignore'):
        return 1 / (1 + np.exp(-x))


def _pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    left, right, top, bottom = same_padding(kernel, stride)
    if not (left or right or top or bottom):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _out_size(padded: int, kernel: int, stride: int) -> int:
    return (padded - kernel) // stride + 1


def _matmul(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    # One BLAS call over every pixel (``@`` on a 4-D array would make one
    # small product per row).
    return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(
        *x.shape[:-1], matrix.shape[1])


def conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """A dense 'SAME' conv: [N, H, W, I] x [O, I, k, k] -> [N, H', W', O]."""
    k = weight.shape[-1]
    if k == 1 and stride == 1:
        return _matmul(x, weight[:, :, 0, 0].T)
    x = _pad(x, k, stride)
    h, w = _out_size(x.shape[1], k, stride), _out_size(x.shape[2], k, stride)
    columns = np.concatenate([
        x[:, i:i + stride * (h - 1) + 1:stride,
          j:j + stride * (w - 1) + 1:stride, :]
        for i in range(k) for j in range(k)], axis=-1)
    # Columns are ordered (i, j, channel): the weights likewise.
    return _matmul(columns,
                   weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]))


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """A depthwise 'SAME' conv: [N, H, W, C] x [C, 1, k, k]."""
    k = weight.shape[-1]
    x = _pad(x, k, stride)
    h, w = _out_size(x.shape[1], k, stride), _out_size(x.shape[2], k, stride)
    out = np.zeros((x.shape[0], h, w, x.shape[3]), x.dtype)
    for i in range(k):
        for j in range(k):
            out += weight[:, 0, i, j] * x[:, i:i + stride * (h - 1) + 1:stride,
                                          j:j + stride * (w - 1) + 1:stride, :]
    return out


class NumpyEfficientNet:
    """The network of a conformed state (:func:`.folded.conformed_state`),
    in ``dtype``; ``features`` is what PySpacer extracts."""

    def __init__(self, state: Mapping[str, np.ndarray],
                 dtype: np.dtype | type = np.float64):
        self.dtype = np.dtype(dtype)
        self.params = {k: np.asarray(v, dtype=self.dtype)
                       for k, v in state.items() if not k.startswith('_fc.')}

    def batch_norm(self, prefix: str, x: np.ndarray) -> np.ndarray:
        """Eval mode: the stored running statistics."""
        p = self.params
        scale = p[f'{prefix}.weight'] / np.sqrt(
            p[f'{prefix}.running_var'] + BN_EPS)
        return (x - p[f'{prefix}.running_mean']) * scale + p[f'{prefix}.bias']

    def features(self, patches: np.ndarray,
                 batch_norm: BatchNormHook | None = None) -> np.ndarray:
        """[N, 224, 224, 3 or 4] uint8 (a 4th channel ignored) ->
        [N, 1280] features, every step in ``self.dtype``."""
        bn = batch_norm or self.batch_norm
        p = self.params
        x = patches[..., :3].astype(self.dtype) / self.dtype.type(255)
        x = silu(bn('_bn0', conv(x, p['_conv_stem.weight'], 2)))
        for i, spec in enumerate(block_specs()):
            b = f'_blocks.{i}'
            inputs = x
            if spec.expand != 1:
                x = silu(bn(f'{b}._bn0', conv(x, p[f'{b}._expand_conv.weight'],
                                             1)))
            x = silu(bn(f'{b}._bn1', depthwise(
                x, p[f'{b}._depthwise_conv.weight'], spec.stride)))
            pooled = x.mean(axis=(1, 2))
            gate = silu(pooled @ p[f'{b}._se_reduce.weight'][:, :, 0, 0].T
                        + p[f'{b}._se_reduce.bias'])
            gate = sigmoid(gate @ p[f'{b}._se_expand.weight'][:, :, 0, 0].T
                           + p[f'{b}._se_expand.bias'])
            x = x * gate[:, None, None, :]
            x = bn(f'{b}._bn2', conv(x, p[f'{b}._project_conv.weight'], 1))
            if spec.residual:
                x = x + inputs
        x = silu(bn('_bn1', conv(x, p['_conv_head.weight'], 1)))
        return x.mean(axis=(1, 2))
