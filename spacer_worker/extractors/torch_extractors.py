"""``TorchExtractor``: PySpacer's documented base for custom PyTorch
extractors (``spacer.extractors.torch_extractors``).

A subclass gives ``untrained_model()`` (a ``torch.nn.Module`` with an
``extract_features(batch)`` method) and a ``feature_dim``; its weights file
is ``{'net': state_dict}`` at ``data_locations['weights']``. To run one on
the workers, list its class path in the ``EXTRA_EXTRACTOR_CLASSES``
setting (on the workers and on the sender); messages naming any other
class are refused without importing it.

Worker side: torch is imported by the calls that need it.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Callable
from typing import Any, ClassVar

from spacer_worker.data_classes import DataLocation
from spacer_worker.extractors.base import FeatureExtractor
from spacer_worker.storage.factory import storage_factory

__all__ = ['TorchExtractor', 'storage_factory', 'transformation']


def transformation() -> Callable[[Any], Any]:
    """A PIL image or HxWxC array -> CxHxW float tensor, as torchvision's
    ToTensor does (8-bit values scaled to [0, 1])."""
    from spacer_worker.extractors.runtime.torch_api import to_tensor_transform
    return to_tensor_transform()


class TorchExtractor(FeatureExtractor, abc.ABC):
    """Features from a PyTorch network: patches in batches of BATCH_SIZE
    through ``net.extract_features``."""

    DATA_LOCATION_KEYS: ClassVar[list[str]] = ['weights']
    BATCH_SIZE: ClassVar[int] = 10

    def load_datastream(self, key: str) -> tuple[io.BytesIO, bool]:
        """The verified bytes of ``data_locations[key]`` (sha256 checked;
        remote ones cached in EXTRACTORS_CACHE_DIR), and whether they were
        downloaded by this call."""
        from spacer_worker.extractors.runtime.weights import fetch

        weights = fetch(self, key)
        return io.BytesIO(weights.data), weights.loaded_remotely

    def patches_to_features(self, patch_list: list[Any]) -> tuple[list, bool]:
        from spacer_worker.extractors.runtime.torch_api import (
            patches_to_features,
        )
        return patches_to_features(self, patch_list)

    @staticmethod
    def untrained_model() -> Any:
        """The network with its intended shape, untrained."""
        raise NotImplementedError

    @classmethod
    def load_weights(cls, weights_datastream: io.BytesIO) -> Any:
        """``untrained_model()`` with the file's ``net`` state dict (loaded
        with ``weights_only=True``; DataParallel ``module.`` prefixes
        dropped), frozen."""
        from spacer_worker.extractors.runtime.torch_api import load_weights
        return load_weights(cls, weights_datastream)

    @classmethod
    def untrained_instance(cls, data_loc_key: str = 'weights'
                           ) -> TorchExtractor:
        """An instance over untrained weights kept in memory storage (for
        trying message formats, not for real features)."""
        from spacer_worker.extractors.runtime.network import (
            store_untrained_weights,
        )
        store_untrained_weights(cls.untrained_model(), data_loc_key)
        return cls(data_locations={
            'weights': DataLocation('memory', data_loc_key)})
