"""EfficientNet-b0 extractor description (CoralNet 1.0's extractor).

``data_locations['weights']`` is a PyTorch file in PySpacer's layout
(``{'net': state_dict}``); ``data_hashes['weights']`` its sha256. Calling
the extractor runs the network in :mod:`spacer_worker.extractors.runtime`
(torch is imported there, only in a worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from spacer_worker.extractors.base import FeatureExtractor, builtin

if TYPE_CHECKING:
    from spacer_worker.data_classes import ImageFeatures
    from spacer_worker.data_classes.results import ExtractFeaturesReturnMsg


@builtin
class EfficientNetExtractor(FeatureExtractor):
    PYSPACER_CLASS_PATH = 'spacer.extractors.efficientnet.EfficientNetExtractor'
    DATA_LOCATION_KEYS: ClassVar[list[str]] = ['weights']
    MODEL_NAME: ClassVar[str] = 'efficientnet-b0'
    NUM_CLASSES: ClassVar[int] = 1275

    @property
    def feature_dim(self) -> int:
        return 1280

    def __call__(self, im: Any, rowcols: Sequence[tuple[int, int]]
                 ) -> tuple[ImageFeatures, ExtractFeaturesReturnMsg]:
        # The network loads only when a worker runs the extractor.
        from spacer_worker.extractors.runtime.efficientnet import run_efficientnet
        return run_efficientnet(self, im, rowcols)

    @classmethod
    def untrained_model(cls) -> Any:
        """A randomly initialised EfficientNet-b0 (torch module) of the
        shape PySpacer's weight files load into (``NUM_CLASSES`` outputs)."""
        # Lazy: torch loads only here (the 'gpu' extra installs it).
        from spacer_worker.extractors.runtime.network import EfficientNetB0
        return EfficientNetB0(num_classes=cls.NUM_CLASSES)

    # PySpacer's PyTorch extractor methods, for code written against it
    # (eager PyTorch; workers extract through runtime.engine).

    def patches_to_features(self, patch_list: list[Any]) -> tuple[list, bool]:
        from spacer_worker.extractors.runtime.torch_api import (
            patches_to_features,
        )
        return patches_to_features(self, patch_list)

    @classmethod
    def load_weights(cls, weights_datastream: Any) -> Any:
        from spacer_worker.extractors.runtime.torch_api import load_weights
        return load_weights(cls, weights_datastream)

    @classmethod
    def untrained_instance(cls, data_loc_key: str = 'weights'
                           ) -> EfficientNetExtractor:
        """An instance over untrained weights kept in memory storage (for
        trying message formats, not for real features), as PySpacer's."""
        from spacer_worker.data_classes import DataLocation
        from spacer_worker.extractors.runtime.network import (
            store_untrained_weights,
        )
        store_untrained_weights(cls.untrained_model(), data_loc_key)
        return cls(data_locations={
            'weights': DataLocation('memory', data_loc_key)})


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'TorchExtractor': 'spacer_worker.extractors.torch_extractors:TorchExtractor',
}, globals())
