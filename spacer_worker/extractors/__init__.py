"""Feature extractor descriptions (importable without torch).

The networks behind them live in :mod:`spacer_worker.extractors.runtime`,
imported only when an extractor is called in a worker.
"""

from spacer_worker.extractors.base import (
    DummyExtractor,
    FeatureExtractor,
    extractor_class,
)
from spacer_worker.extractors.efficientnet import EfficientNetExtractor
from spacer_worker.extractors.vgg16 import VGG16CaffeExtractor

__all__ = [
    'DummyExtractor',
    'EfficientNetExtractor',
    'FeatureExtractor',
    'VGG16CaffeExtractor',
    'extractor_class',
]
