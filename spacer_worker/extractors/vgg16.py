"""VGG16 (Caffe) extractor description: CoralNet's legacy extractor.

Messages naming it still build, serialize and deserialize, so old jobs can
be read and passed on; running it is refused, because this worker has no
Caffe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

from spacer_worker.exceptions import ExtractorNotSupportedError
from spacer_worker.extractors.base import FeatureExtractor


class VGG16CaffeExtractor(FeatureExtractor):
    PYSPACER_CLASS_PATH = 'spacer.extractors.vgg16.VGG16CaffeExtractor'
    # A Caffe .prototxt and a .caffemodel.
    DATA_LOCATION_KEYS: ClassVar[list[str]] = ['definition', 'weights']

    @property
    def feature_dim(self) -> int:
        return 4096

    def __call__(self, im: Any, rowcols: Sequence[tuple[int, int]]) -> NoReturn:
        raise ExtractorNotSupportedError(
            'VGG16CaffeExtractor needs Caffe, which this worker does not '
            'support. Use EfficientNetExtractor (CoralNet 1.0 features), or '
            'run VGG16 jobs with PySpacer in its Caffe Docker image. Note '
            'that features of the two extractors are not interchangeable: '
            'a classifier trained on one cannot score the other.')

    def patches_to_features(self, patch_list: list[Any]) -> NoReturn:
        self(None, [])
