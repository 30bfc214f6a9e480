"""A PySpacer-style custom extractor: a TorchExtractor subclass with a
tiny network (allowlisted in the tests with EXTRA_EXTRACTOR_CLASSES)."""

from __future__ import annotations

import torch

from spacer_worker.extractors.torch_extractors import TorchExtractor


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, kernel_size=8, stride=8)

    def extract_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.conv(batch).mean(dim=(2, 3))


class TinyExtractor(TorchExtractor):
    CROP_SIZE = 16

    @staticmethod
    def untrained_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return TinyNet()

    @property
    def feature_dim(self) -> int:
        return 6
