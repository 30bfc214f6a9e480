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

from spacer_worker import config
from spacer_worker.data_classes import DataLocation
from spacer_worker.extractors.base import FeatureExtractor
from spacer_worker.storage.factory import storage_factory

__all__ = ['TorchExtractor', 'storage_factory', 'transformation']


def transformation() -> Callable[[Any], Any]:
    """HxWx3 uint8 patch -> 3xHxW float32 tensor in [0, 1] (what
    torchvision's ToTensor does, without needing torchvision)."""
    import numpy as np
    import torch

    def to_tensor(patch: Any) -> Any:
        array = np.asarray(patch, dtype=np.uint8)
        return torch.from_numpy(
            np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255)
    return to_tensor


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
        import torch

        stream, loaded_remotely = self.load_datastream('weights')
        net = self.load_weights(stream)
        net.eval()
        to_tensor = transformation()
        features: list = []
        with config.log_entry_and_exit('forward pass through net'):
            for start in range(0, len(patch_list), self.BATCH_SIZE):
                batch = torch.stack([to_tensor(p) for p in
                                     patch_list[start:start + self.BATCH_SIZE]])
                with torch.no_grad():
                    features.extend(net.extract_features(batch).tolist())
        return features, loaded_remotely

    @staticmethod
    def untrained_model() -> Any:
        """The network with its intended shape, untrained."""
        raise NotImplementedError

    @classmethod
    def load_weights(cls, weights_datastream: io.BytesIO) -> Any:
        """``untrained_model()`` with the file's ``net`` state dict (loaded
        with ``weights_only=True``; DataParallel ``module.`` prefixes
        dropped), frozen."""
        from spacer_worker.extractors.runtime.weights import (
            Weights,
            load_state_dict,
            sha256_of,
        )

        data = weights_datastream.getvalue()
        state = load_state_dict(Weights(data, sha256_of(data), False),
                                f'{cls.__name__} weights')
        model = cls.untrained_model()
        with config.log_entry_and_exit('model initialization'):
            model.load_state_dict(state)
        for parameter in model.parameters():
            parameter.requires_grad = False
        return model

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
