"""EfficientNet-b0 as PySpacer trains and stores it, for loading weights.

The module tree mirrors the parameter names of PySpacer/CoralNet weight
files (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn0`` ...), so a
``{'net': state_dict}`` file loads with ``load_state_dict`` unchanged. This
network is the reference and the source of parameters: the engine runs a
batch-norm-folded copy of it (see :mod:`.folded`).

Its shape comes from :mod:`.architecture`, which a worker without torch
uses alone; this module is for PyTorch (the CUDA backend, tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spacer_worker.extractors.runtime.architecture import (
    BN_EPS,
    BN_MOMENTUM,
    CROP_SIZE,
    FEATURE_DIM,
    NUM_CLASSES,
    BlockSpec,
    block_specs,
    same_padding,
    strip_data_parallel,
)

__all__ = ['CROP_SIZE', 'FEATURE_DIM', 'NUM_CLASSES', 'BlockSpec',
           'EfficientNetB0', 'MBConv', 'SamePadConv', 'block_specs',
           'same_padding', 'strip_data_parallel']

class SamePadConv(nn.Conv2d):
    """A Conv2d padding as PySpacer's static 'SAME' convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int,
                 stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel, stride=stride,
                         padding=0, groups=groups, bias=bias)
        self.pad = same_padding(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted bottleneck: expand, depthwise, squeeze-excite, project."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        hidden = spec.hidden
        if spec.expand != 1:
            self._expand_conv = SamePadConv(spec.in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv(hidden, hidden, spec.kernel,
                                           stride=spec.stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._se_reduce = SamePadConv(hidden, spec.squeezed, 1, bias=True)
        self._se_expand = SamePadConv(spec.squeezed, hidden, 1, bias=True)
        self._project_conv = SamePadConv(hidden, spec.out_channels, 1)
        self._bn2 = _bn(spec.out_channels)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.spec.expand != 1:
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = self._se_expand(F.silu(self._se_reduce(gate)))
        x = torch.sigmoid(gate) * x
        x = self._bn2(self._project_conv(x))
        if self.spec.residual:
            x = x + inputs
        return x


class EfficientNetB0(nn.Module):
    """The reference network; ``features`` is what PySpacer extracts."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self._conv_stem = SamePadConv(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(s) for s in block_specs())
        self._conv_head = SamePadConv(320, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] in [0, 1] -> [N, 1280] pooled head activations."""
        x = F.silu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """PySpacer's name for :meth:`features`."""
        return self.features(x)

    # PySpacer's EfficientNet class methods, for code written against it.

    @classmethod
    def _check_model_name_is_valid(cls, model_name: str) -> None:
        if model_name != 'efficientnet-b0':
            raise ValueError(f'{model_name!r}: this network is '
                             f'efficientnet-b0 only.')

    @classmethod
    def get_image_size(cls, model_name: str) -> int:
        cls._check_model_name_is_valid(model_name)
        return 224


def store_untrained_weights(model: nn.Module, key: str) -> None:
    """``model``'s weights, in PySpacer's layout, at memory-storage
    ``key``: what ``untrained_instance`` extractors read."""
    import io

    from spacer_worker.storage import storage_factory

    stream = io.BytesIO()
    torch.save({'net': model.state_dict()}, stream)
    storage_factory('memory').store(key, stream.getvalue())
