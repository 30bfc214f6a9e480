"""Small real inputs for client tests: images on disk, messages over them."""

from __future__ import annotations

from pathlib import Path

from spacer_worker.extractors import DummyExtractor


class LocalOnlyExtractor(DummyExtractor):
    """Allowed on the client (EXTRA_EXTRACTOR_CLASSES) but not on the test
    workers: a message naming it fails on the worker for good."""


def write_image(path: Path, size: tuple[int, int] = (64, 48),
                seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def extract_msg(image: Path, features: Path, token: str = 'tok',
                extractor=None, rowcols=((5, 5), (10, 20))):
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.messages import ExtractFeaturesMsg
    return ExtractFeaturesMsg(
        job_token=token,
        extractor=extractor or DummyExtractor(feature_dim=8),
        rowcols=list(rowcols),
        image_loc=DataLocation('filesystem', str(image)),
        feature_loc=DataLocation('filesystem', str(features)))


def extract_job(images: list[Path], out_dir: Path, token: str = 'job',
                extractor=None):
    from spacer_worker.messages import JobMsg
    return JobMsg(task_name='extract_features', tasks=[
        extract_msg(image, out_dir / f'{image.stem}-{token}.featurevector',
                    token=token, extractor=extractor)
        for image in images])
