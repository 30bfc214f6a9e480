"""The inference form of EfficientNet-b0: batch norm folded into convs, in
numpy.

In eval mode a BatchNorm is an affine map per channel, so it merges into the
convolution before it (scaled weights plus a bias); this removes 48 passes
over the activations. The folding is done in float64 and rounded to float32
once, with the operations PyTorch's folding used (``w / sqrt(var + eps)``,
``b - mean * scale``), so the parameters are bit-identical to a fold done
with torch and a CPU worker needs no torch at all. Results differ from the
reference network only by float rounding (~1e-6 relative).

The stem is the exception: it is kept a bias-free conv followed by its own
batch norm, as PySpacer computes it, for the PyTorch backend
(:mod:`.torch_folded`). Its batch norm scales the conv output by up to ~25
and the network amplifies any change there, so the stem's float32 rounding
is most of the features' float32 error; rounding as PySpacer does keeps
that backend within ~1e-4 of PySpacer's features. The ONNX Runtime graph
folds the stem too (:mod:`.onnx_graph`): its rounding differs from
PySpacer's, but it stays as close to a float64 run as PySpacer's own,
which is the rule (``tests/fidelity.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from spacer_worker.exceptions import WeightsLoadError
from spacer_worker.extractors.runtime.architecture import (
    BN_COUNTER,
    BN_EPS,
    FEATURE_DIM,
    NUM_CLASSES,
    BlockSpec,
    block_specs,
    state_shapes,
)


@dataclass(frozen=True)
class Conv:
    weight: np.ndarray        # float32 [out, in / groups, k, k]
    bias: np.ndarray | None   # float32 [out]
    stride: int
    groups: int = 1

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Linear:
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray    # float32 [out]


@dataclass(frozen=True)
class BatchNorm:
    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float = BN_EPS


@dataclass(frozen=True)
class FoldedBlock:
    spec: BlockSpec
    expand: Conv | None
    depthwise: Conv
    se_reduce: Linear
    se_expand: Linear
    project: Conv


@dataclass(frozen=True)
class FoldedNetwork:
    """[N, 3, 224, 224] in [0, 1] -> [N, 1280] features, as parameters."""
    stem: Conv           # bias-free; its batch norm apart (see above)
    stem_bn: BatchNorm
    blocks: tuple[FoldedBlock, ...]
    head: Conv


def conformed_state(state: Mapping[str, np.ndarray], where: str
                    ) -> dict[str, np.ndarray]:
    """``state`` checked against EfficientNet-b0's names and shapes and
    converted to float32, as ``load_state_dict`` copies into the network
    (BatchNorm counters may be absent, as PyTorch allows)."""
    shapes = state_shapes()
    missing = [k for k in shapes if k not in state
               and not k.endswith(BN_COUNTER)]
    unexpected = [k for k in state if k not in shapes]
    wrong = [f'{k}: {tuple(state[k].shape)} for {shapes[k]}'
             for k in shapes if k in state
             and tuple(state[k].shape) != shapes[k]]
    if missing or unexpected or wrong:
        said = []
        for what, names in (('missing', missing), ('unexpected', unexpected),
                            ('wrong shapes', wrong)):
            if names:
                said.append(f"{what} ({len(names)}): "
                            f"{', '.join(names[:5])}"
                            f"{', ...' if len(names) > 5 else ''}")
        raise WeightsLoadError(
            f"Extractor weights at {where} do not fit EfficientNet-b0 "
            f"({NUM_CLASSES} classes, {FEATURE_DIM} features): "
            f"{'; '.join(said)}"[:900])
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()
            if not k.endswith(BN_COUNTER)}


def batch_norm(state: Mapping[str, np.ndarray], prefix: str) -> BatchNorm:
    return BatchNorm(*(state[f'{prefix}.{part}'] for part in
                       ('weight', 'bias', 'running_mean', 'running_var')))


def fold(weight: np.ndarray, bn: BatchNorm, stride: int = 1,
         groups: int = 1, bias: np.ndarray | None = None) -> Conv:
    """One conv with bias equal to ``bn(conv(x))`` in eval mode."""
    # In float64, so folding adds no rounding of its own.
    scale = bn.weight.astype(np.float64) / np.sqrt(
        bn.running_var.astype(np.float64) + bn.eps)
    folded_bias = bn.bias.astype(np.float64) - \
        bn.running_mean.astype(np.float64) * scale
    if bias is not None:
        folded_bias = folded_bias + bias.astype(np.float64) * scale
    folded = weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    return Conv(folded.astype(np.float32), folded_bias.astype(np.float32),
                stride, groups)


def scaled_stem(net: FoldedNetwork) -> Conv:
    """The stem conv with its batch norm and the uint8 -> [0, 1] scaling
    folded in (in float64), so it takes raw byte values."""
    stem = fold(net.stem.weight, net.stem_bn, net.stem.stride)
    weight = (stem.weight.astype(np.float64) / 255).astype(np.float32)
    return Conv(weight, stem.bias, stem.stride)


def _linear(state: Mapping[str, np.ndarray], prefix: str) -> Linear:
    weight = state[f'{prefix}.weight']
    return Linear(weight.reshape(weight.shape[0], -1), state[f'{prefix}.bias'])


def fold_network(state: Mapping[str, np.ndarray]) -> FoldedNetwork:
    """The folded network of a :func:`conformed_state`."""
    blocks = []
    for i, spec in enumerate(block_specs()):
        p = f'_blocks.{i}'
        expand = (fold(state[f'{p}._expand_conv.weight'],
                       batch_norm(state, f'{p}._bn0'))
                  if spec.expand != 1 else None)
        blocks.append(FoldedBlock(
            spec, expand,
            fold(state[f'{p}._depthwise_conv.weight'],
                 batch_norm(state, f'{p}._bn1'), spec.stride, spec.hidden),
            _linear(state, f'{p}._se_reduce'),
            _linear(state, f'{p}._se_expand'),
            fold(state[f'{p}._project_conv.weight'],
                 batch_norm(state, f'{p}._bn2'))))
    return FoldedNetwork(
        Conv(state['_conv_stem.weight'], None, 2),
        batch_norm(state, '_bn0'), tuple(blocks),
        fold(state['_conv_head.weight'], batch_norm(state, '_bn1')))
