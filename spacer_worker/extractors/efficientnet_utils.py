"""PySpacer's ``spacer.extractors.efficientnet_utils``: the EfficientNet
family's scaling rules and building blocks in PyTorch, for code written
against PySpacer. Our own network (``runtime.network``) is b0 only and
fixed; these helpers describe the family as the published models do.

torch is imported with this module: it is worker-side only.
"""

from __future__ import annotations

import collections
import math
import re
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own alias

__all__ = [
    'BlockArgs', 'BlockDecoder', 'Conv2dDynamicSamePadding',
    'Conv2dStaticSamePadding', 'GlobalParams', 'drop_connect',
    'efficientnet', 'efficientnet_params', 'get_model_params',
    'get_same_padding_conv2d', 'round_filters', 'round_repeats',
]

GlobalParams = collections.namedtuple('GlobalParams', [
    'width_coefficient', 'depth_coefficient', 'image_size', 'dropout_rate',
    'num_classes', 'batch_norm_momentum', 'batch_norm_epsilon',
    'drop_connect_rate', 'depth_divisor', 'min_depth'])
GlobalParams.__new__.__defaults__ = (None,) * len(GlobalParams._fields)

BlockArgs = collections.namedtuple('BlockArgs', [
    'num_repeat', 'kernel_size', 'strides', 'expand_ratio', 'input_filters',
    'output_filters', 'se_ratio', 'id_skip'])
BlockArgs.__new__.__defaults__ = (None,) * len(BlockArgs._fields)

# (width multiplier, depth multiplier, input resolution, dropout rate)
_FAMILY = {
    'efficientnet-b0': (1.0, 1.0, 224, 0.2),
    'efficientnet-b1': (1.0, 1.1, 240, 0.2),
    'efficientnet-b2': (1.1, 1.2, 260, 0.3),
    'efficientnet-b3': (1.2, 1.4, 300, 0.3),
    'efficientnet-b4': (1.4, 1.8, 380, 0.4),
    'efficientnet-b5': (1.6, 2.2, 456, 0.4),
    'efficientnet-b6': (1.8, 2.6, 528, 0.5),
    'efficientnet-b7': (2.0, 3.1, 600, 0.5),
}

# The seven stages of b0, in the family's compact notation.
_B0_BLOCKS = [
    'r1_k3_s11_e1_i32_o16_se0.25', 'r2_k3_s22_e6_i16_o24_se0.25',
    'r2_k5_s22_e6_i24_o40_se0.25', 'r3_k3_s22_e6_i40_o80_se0.25',
    'r3_k5_s11_e6_i80_o112_se0.25', 'r4_k5_s22_e6_i112_o192_se0.25',
    'r1_k3_s11_e6_i192_o320_se0.25',
]


def round_filters(filters: int, global_params: Any) -> int:
    """A channel count scaled by the width multiplier, then rounded to a
    multiple of ``depth_divisor`` without losing more than 10%."""
    multiplier = global_params.width_coefficient
    if not multiplier:
        return filters
    divisor = global_params.depth_divisor
    floor = global_params.min_depth or divisor
    scaled = filters * multiplier
    rounded = max(floor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, global_params: Any) -> int:
    """A stage's block count scaled by the depth multiplier (rounded up)."""
    multiplier = global_params.depth_coefficient
    if not multiplier:
        return repeats
    return int(math.ceil(multiplier * repeats))


def drop_connect(inputs: torch.Tensor, p: float, training: bool
                 ) -> torch.Tensor:
    """Stochastic depth: in training, zero whole samples with probability
    ``p`` and rescale the rest; the identity otherwise."""
    if not training:
        return inputs
    keep = 1 - p
    mask = torch.floor(keep + torch.rand(
        [inputs.shape[0], 1, 1, 1], dtype=inputs.dtype, device=inputs.device))
    return inputs / keep * mask


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dDynamicSamePadding(nn.Conv2d):
    """A convolution padded like TensorFlow's 'SAME', computed per input
    size (any image size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any,
                 stride: Any = 1, dilation: Any = 1, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0,
                         dilation, groups, bias)
        if len(self.stride) != 2:
            self.stride = (self.stride[0],) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = (_same_padding(size, k, s, d) for size, k, s, d in zip(
            x.shape[-2:], self.weight.shape[-2:], self.stride, self.dilation,
            strict=True))
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2,
                          pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class Conv2dStaticSamePadding(nn.Conv2d):
    """'SAME' padding fixed once for a known ``image_size``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any,
                 image_size: Any = None, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        if len(self.stride) != 2:
            self.stride = (self.stride[0],) * 2
        if image_size is None:
            raise ValueError('Conv2dStaticSamePadding needs an image_size.')
        height, width = (image_size if isinstance(image_size, (list, tuple))
                         else (image_size, image_size))
        pad_h = _same_padding(height, self.weight.shape[-2], self.stride[0],
                              self.dilation[0])
        pad_w = _same_padding(width, self.weight.shape[-1], self.stride[1],
                              self.dilation[1])
        self.static_padding: nn.Module = (
            nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2,
                          pad_h // 2, pad_h - pad_h // 2))
            if pad_h or pad_w else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, self.bias,
                        self.stride, self.padding, self.dilation, self.groups)


def get_same_padding_conv2d(image_size: Any = None) -> Any:
    """The 'SAME'-padded convolution class: dynamic without an image size,
    else static for that size."""
    if image_size is None:
        return Conv2dDynamicSamePadding
    return partial(Conv2dStaticSamePadding, image_size=image_size)


class BlockDecoder:
    """Block arguments to and from the compact strings the family is
    published in (``r1_k3_s11_e1_i32_o16_se0.25``)."""

    _PART = re.compile(r'^([a-z]+)(.*)$')

    @staticmethod
    def _decode_block_string(block_string: str) -> BlockArgs:
        fields = {}
        for part in block_string.split('_'):
            match = BlockDecoder._PART.match(part)
            if match:
                fields[match.group(1)] = match.group(2)
        strides = fields['s']
        if len(strides) != 2:
            raise ValueError(f'block {block_string!r}: strides need two '
                             f'digits (s11, s22), got s{strides}.')
        return BlockArgs(
            num_repeat=int(fields['r']), kernel_size=int(fields['k']),
            strides=[int(strides[0]), int(strides[1])],
            expand_ratio=int(fields['e']), input_filters=int(fields['i']),
            output_filters=int(fields['o']),
            se_ratio=float(fields['se']) if 'se' in fields else None,
            id_skip='noskip' not in block_string)

    @staticmethod
    def _encode_block_string(block: Any) -> str:
        text = (f'r{block.num_repeat}_k{block.kernel_size}'
                f'_s{block.strides[0]}{block.strides[1]}'
                f'_e{block.expand_ratio}_i{block.input_filters}'
                f'_o{block.output_filters}')
        if block.se_ratio is not None and 0 < block.se_ratio <= 1:
            text += f'_se{block.se_ratio}'
        if block.id_skip is False:
            text += '_noskip'
        return text

    @staticmethod
    def decode(string_list: list[str]) -> list[BlockArgs]:
        if not isinstance(string_list, list):
            raise TypeError('BlockDecoder.decode expects a list of strings.')
        return [BlockDecoder._decode_block_string(s) for s in string_list]

    @staticmethod
    def encode(blocks_args: list[Any]) -> list[str]:
        return [BlockDecoder._encode_block_string(b) for b in blocks_args]


def efficientnet_params(model_name: str) -> tuple[float, float, int, float]:
    """(width, depth, resolution, dropout) of a family member."""
    return _FAMILY[model_name]


def efficientnet(width_coefficient: float | None = None,
                 depth_coefficient: float | None = None,
                 dropout_rate: float = 0.2, drop_connect_rate: float = 0.2,
                 image_size: int | None = None, num_classes: int = 1000,
                 ) -> tuple[list[BlockArgs], GlobalParams]:
    """The block arguments and global parameters of a family member."""
    return BlockDecoder.decode(list(_B0_BLOCKS)), GlobalParams(
        batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
        dropout_rate=dropout_rate, drop_connect_rate=drop_connect_rate,
        num_classes=num_classes, width_coefficient=width_coefficient,
        depth_coefficient=depth_coefficient, depth_divisor=8, min_depth=None,
        image_size=image_size)


def get_model_params(model_name: str, override_params: dict | None
                     ) -> tuple[list[BlockArgs], GlobalParams]:
    """Block arguments and global parameters by model name; only the
    EfficientNet family is known."""
    if not model_name.startswith('efficientnet') or model_name not in _FAMILY:
        raise NotImplementedError(f'model name is not pre-defined: '
                                  f'{model_name!r}')
    width, depth, resolution, dropout = efficientnet_params(model_name)
    blocks, params = efficientnet(width_coefficient=width,
                                  depth_coefficient=depth,
                                  dropout_rate=dropout, image_size=resolution)
    if override_params:
        params = params._replace(**override_params)
    return blocks, params
