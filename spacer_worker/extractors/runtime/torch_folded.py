"""The folded network (:mod:`.folded`) as a PyTorch module, for the
PyTorch backend (CUDA, or ``EXTRACT_BACKEND=torch`` on CPU).

Squeeze-excite runs as two small matrix products on the pooled vector. The
stem stays a bias-free conv followed by its own batch norm, computed as
PySpacer computes it (:mod:`.folded` says why).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spacer_worker.extractors.runtime.architecture import same_padding
from spacer_worker.extractors.runtime.folded import (
    BatchNorm,
    Conv,
    FoldedBlock,
    FoldedNetwork,
    Linear,
)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _conv(conv: Conv) -> nn.Conv2d:
    pad = same_padding(conv.kernel, conv.stride)
    symmetric = pad[0] == pad[1]
    module = nn.Conv2d(conv.weight.shape[1] * conv.groups, conv.out_channels,
                       conv.kernel, stride=conv.stride, groups=conv.groups,
                       bias=conv.bias is not None,
                       padding=pad[0] if symmetric else 0)
    with torch.no_grad():
        module.weight.copy_(_tensor(conv.weight))
        if conv.bias is not None:
            module.bias.copy_(_tensor(conv.bias))
    # Stride-2 'SAME' padding is lopsided (one more at the bottom/right):
    # the conv cannot express it, so the block pads explicitly first.
    module.extra_pad = None if symmetric else pad
    return module


def _batch_norm(bn: BatchNorm) -> nn.BatchNorm2d:
    module = nn.BatchNorm2d(len(bn.weight), eps=bn.eps)
    with torch.no_grad():
        module.weight.copy_(_tensor(bn.weight))
        module.bias.copy_(_tensor(bn.bias))
        module.running_mean.copy_(_tensor(bn.running_mean))
        module.running_var.copy_(_tensor(bn.running_var))
    return module.eval()


def _linear(linear: Linear) -> nn.Linear:
    module = nn.Linear(linear.weight.shape[1], linear.weight.shape[0])
    with torch.no_grad():
        module.weight.copy_(_tensor(linear.weight))
        module.bias.copy_(_tensor(linear.bias))
    return module


def _run(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if conv.extra_pad is not None:
        x = F.pad(x, conv.extra_pad)
    return conv(x)


class TorchFoldedBlock(nn.Module):
    def __init__(self, block: FoldedBlock):
        super().__init__()
        self.spec = block.spec
        self.expand = _conv(block.expand) if block.expand is not None else None
        self.depthwise = _conv(block.depthwise)
        self.se_reduce = _linear(block.se_reduce)
        self.se_expand = _linear(block.se_expand)
        self.project = _conv(block.project)

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

    def __init__(self, net: FoldedNetwork):
        super().__init__()
        self.stem = _conv(net.stem)
        self.stem_bn = _batch_norm(net.stem_bn)
        self.blocks = nn.ModuleList(TorchFoldedBlock(b) for b in net.blocks)
        self.head = _conv(net.head)
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
