"""EfficientNet-b0's shape as PySpacer stores it, without torch.

The numbers that define the network (its stages, padding, the names and
shapes of every parameter in a PySpacer weights file) in plain Python, so
that a CPU worker checks, folds and runs weights with numpy and ONNX
Runtime alone. :mod:`.network` builds the PyTorch module from the same
table.

Convolutions pad like TensorFlow's 'SAME' for a 224x224 input, as PySpacer's
static padding does: symmetric for stride 1, one extra pixel at the
bottom/right for stride 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

NUM_CLASSES = 1275
FEATURE_DIM = 1280
CROP_SIZE = 224
STEM_CHANNELS = 32
HEAD_INPUT = 320
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch's convention: 1 - TensorFlow's 0.99
BN_PARTS = ('weight', 'bias', 'running_mean', 'running_var')
BN_COUNTER = 'num_batches_tracked'


@dataclass(frozen=True)
class Stage:
    """One row of the EfficientNet-b0 table: blocks sharing a shape."""
    kernel: int
    repeats: int
    in_channels: int
    out_channels: int
    expand: int
    stride: int


STAGES = (
    Stage(3, 1, 32, 16, 1, 1),
    Stage(3, 2, 16, 24, 6, 2),
    Stage(5, 2, 24, 40, 6, 2),
    Stage(3, 3, 40, 80, 6, 2),
    Stage(5, 3, 80, 112, 6, 1),
    Stage(5, 4, 112, 192, 6, 2),
    Stage(3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    in_channels: int
    out_channels: int
    expand: int
    stride: int

    @property
    def hidden(self) -> int:
        return self.in_channels * self.expand

    @property
    def squeezed(self) -> int:
        return max(1, int(self.in_channels * SE_RATIO))

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def block_specs() -> list[BlockSpec]:
    """The 16 MBConv blocks of b0, in order."""
    specs = []
    for stage in STAGES:
        for i in range(stage.repeats):
            specs.append(BlockSpec(
                kernel=stage.kernel,
                in_channels=stage.in_channels if i == 0 else stage.out_channels,
                out_channels=stage.out_channels,
                expand=stage.expand,
                stride=stage.stride if i == 0 else 1))
    return specs


def same_padding(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """F.pad amounts (left, right, top, bottom) of TF 'SAME' on 224 px."""
    out = -(-CROP_SIZE // stride)
    total = max((out - 1) * stride + kernel - CROP_SIZE, 0)
    before = total // 2
    after = total - before
    return before, after, before, after


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes = {f'{prefix}.{part}': (channels,) for part in BN_PARTS}
    shapes[f'{prefix}.{BN_COUNTER}'] = ()
    return shapes


def state_shapes() -> dict[str, tuple[int, ...]]:
    """Every entry of an EfficientNet-b0 state dict and its shape, in the
    order ``EfficientNetB0().state_dict()`` lists them."""
    shapes: dict[str, tuple[int, ...]] = {
        '_conv_stem.weight': (STEM_CHANNELS, 3, 3, 3)}
    shapes.update(_bn_shapes('_bn0', STEM_CHANNELS))
    for i, spec in enumerate(block_specs()):
        p, hidden = f'_blocks.{i}', spec.hidden
        if spec.expand != 1:
            shapes[f'{p}._expand_conv.weight'] = (hidden, spec.in_channels,
                                                  1, 1)
            shapes.update(_bn_shapes(f'{p}._bn0', hidden))
        shapes[f'{p}._depthwise_conv.weight'] = (hidden, 1, spec.kernel,
                                                 spec.kernel)
        shapes.update(_bn_shapes(f'{p}._bn1', hidden))
        shapes[f'{p}._se_reduce.weight'] = (spec.squeezed, hidden, 1, 1)
        shapes[f'{p}._se_reduce.bias'] = (spec.squeezed,)
        shapes[f'{p}._se_expand.weight'] = (hidden, spec.squeezed, 1, 1)
        shapes[f'{p}._se_expand.bias'] = (hidden,)
        shapes[f'{p}._project_conv.weight'] = (spec.out_channels, hidden, 1, 1)
        shapes.update(_bn_shapes(f'{p}._bn2', spec.out_channels))
    shapes['_conv_head.weight'] = (FEATURE_DIM, HEAD_INPUT, 1, 1)
    shapes.update(_bn_shapes('_bn1', FEATURE_DIM))
    shapes['_fc.weight'] = (NUM_CLASSES, FEATURE_DIM)
    shapes['_fc.bias'] = (NUM_CLASSES,)
    return shapes


Value = TypeVar('Value')


def strip_data_parallel(state_dict: Mapping[str, Value]) -> dict[str, Value]:
    """Drop the ``module.`` prefix DataParallel adds (CoralNet 1.0 weights)."""
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state_dict.items()}
