"""The inference form of EfficientNet-b0: batch norm folded into convs.

In eval mode a BatchNorm is an affine map per channel, so it merges into the
convolution before it (scaled weights plus a bias); this removes 48 passes
over the activations. Squeeze-excite runs as two small matrix products on
the pooled vector. Results differ from the reference network only by float
rounding (~1e-6 relative).

The stem is the exception here: this module keeps it a bias-free conv
followed by its own batch norm, computed as PySpacer computes it, which is
what the PyTorch backend runs. Its batch norm scales the conv output by up
to ~25 and the network amplifies any change there, so the stem's float32
rounding is most of the features' float32 error; rounding as PySpacer does
keeps this backend within ~1e-4 of PySpacer's features
(``tests/extraction/test_precision.py``). The ONNX Runtime graph folds the
stem too (:mod:`.onnx_graph`): its rounding differs from PySpacer's, but
it stays as close to a float64 run as PySpacer's own, which is the rule
(``tests/fidelity.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spacer_worker.extractors.runtime.network import (
    BlockSpec,
    EfficientNetB0,
    MBConv,
    SamePadConv,
    same_padding,
)


def fold(conv: SamePadConv, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv with bias equal to ``bn(conv(x))`` in eval mode."""
    # In float64, so folding adds no rounding of its own.
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    pad = same_padding(conv.kernel_size[0], conv.stride[0])
    symmetric = pad[0] == pad[1]
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                       stride=conv.stride, groups=conv.groups, bias=True,
                       padding=pad[0] if symmetric else 0)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(bias)
    # Stride-2 'SAME' padding is lopsided (one more at the bottom/right):
    # the conv cannot express it, so the block pads explicitly first.
    folded.extra_pad = None if symmetric else pad
    return folded


def _copy_conv(conv: SamePadConv) -> nn.Conv2d:
    """The conv unchanged (no bias), padding as :func:`fold` does."""
    pad = same_padding(conv.kernel_size[0], conv.stride[0])
    symmetric = pad[0] == pad[1]
    copy = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                     stride=conv.stride, groups=conv.groups, bias=False,
                     padding=pad[0] if symmetric else 0)
    with torch.no_grad():
        copy.weight.copy_(conv.weight)
    copy.extra_pad = None if symmetric else pad
    return copy


def _copy_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    copy = nn.BatchNorm2d(bn.num_features, eps=bn.eps)
    copy.load_state_dict(bn.state_dict())
    return copy.eval()


def _run(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if conv.extra_pad is not None:
        x = F.pad(x, conv.extra_pad)
    return conv(x)


def _linear(conv: nn.Conv2d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.flatten(1))
        linear.bias.copy_(conv.bias)
    return linear


class FoldedBlock(nn.Module):
    def __init__(self, block: MBConv):
        super().__init__()
        self.spec: BlockSpec = block.spec
        self.expand = (fold(block._expand_conv, block._bn0)
                       if self.spec.expand != 1 else None)
        self.depthwise = fold(block._depthwise_conv, block._bn1)
        self.se_reduce = _linear(block._se_reduce)
        self.se_expand = _linear(block._se_expand)
        self.project = fold(block._project_conv, block._bn2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand is not None:
            x = F.silu(self.expand(x))
        x = F.silu(_run(self.depthwise, x))
        gate = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(
            x.mean(dim=(2, 3))))))
        x = x * gate[:, :, None, None]
        x = self.project(x)
        if self.spec.residual:
            x = x + inputs
        return x


class FoldedEfficientNet(nn.Module):
    """[N, 3, 224, 224] in [0, 1] -> [N, 1280] features, inference only."""

    def __init__(self, reference: EfficientNetB0):
        super().__init__()
        reference = reference.eval()
        self.stem = _copy_conv(reference._conv_stem)
        self.stem_bn = _copy_bn(reference._bn0)
        self.blocks = nn.ModuleList(FoldedBlock(b) for b in reference._blocks)
        self.head = fold(reference._conv_head, reference._bn1)
        self.requires_grad_(False)
        self.eval()  # the stem's batch norm must use its running statistics

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] -> the stem's [N, 32, 112, 112] activations."""
        return F.silu(self.stem_bn(_run(self.stem, x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_forward(x)
        for block in self.blocks:
            x = block(x)
        x = F.silu(self.head(x))
        return x.mean(dim=(2, 3))
