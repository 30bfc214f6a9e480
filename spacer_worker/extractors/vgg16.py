"""VGG16 (Caffe) extractor description: CoralNet's legacy extractor.

Messages naming it still build, serialize and deserialize, so old jobs can
be read and passed on; running it is refused, because this worker has no
Caffe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

from spacer_worker.exceptions import ExtractorNotSupportedError
from spacer_worker.extractors.base import FeatureExtractor, builtin


@builtin
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


_NO_CAFFE = ('Caffe is not supported by spacer_worker; run VGG16 jobs with '
             "PySpacer in its Caffe Docker image, or use EfficientNetExtractor.")


class Transformer:
    """PySpacer's Caffe input transformer, kept for its name: every use
    needs Caffe and says so."""

    def __init__(self, mean: tuple = (0, 0, 0)) -> None:
        self.mean = mean

    def preprocess(self, im: Any) -> NoReturn:
        raise ExtractorNotSupportedError(_NO_CAFFE)

    def deprocess(self, im: Any) -> NoReturn:
        raise ExtractorNotSupportedError(_NO_CAFFE)


def load_net(modeldef_path: str, modelweights_path: str) -> Any:
    """PySpacer loads a Caffe net here; this worker has no Caffe."""
    raise ExtractorNotSupportedError(
        f'Cannot load the Caffe net {modeldef_path!r}: {_NO_CAFFE}')


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'ConfigError': 'spacer_worker.exceptions:ConfigError',
}, globals())
