"""PySpacer's PyTorch extractor methods (``patches_to_features``,
``load_weights``), shared by TorchExtractor and EfficientNetExtractor, for
code written against PySpacer. Our own extraction runs in
:mod:`spacer_worker.extractors.runtime.engine`; these run eager PyTorch.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from spacer_worker import config


def to_tensor_transform() -> Any:
    """A PIL image or HxWxC array -> CxHxW float tensor, as torchvision's
    ToTensor does (without needing torchvision): 8-bit values are scaled
    to [0, 1], float arrays are kept as they are."""
    import numpy as np

    def to_tensor(patch: Any) -> Any:
        array = np.asarray(patch)
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if array.dtype == np.uint8:
            return tensor.float().div(255)
        return tensor
    return to_tensor


def load_weights(extractor_cls: Any, weights_datastream: io.BytesIO) -> Any:
    """``extractor_cls.untrained_model()`` with the file's ``net`` state
    dict (read as ``torch.load(weights_only=True)`` reads it, bounded;
    DataParallel ``module.`` prefixes dropped), frozen."""
    from spacer_worker.extractors.runtime.weights import (
        Weights,
        load_state_dict,
        sha256_of,
    )

    data = weights_datastream.getvalue()
    state = load_state_dict(Weights(data, sha256_of(data), False),
                            f'{extractor_cls.__name__} weights')
    model = extractor_cls.untrained_model()
    with config.log_entry_and_exit('model initialization'):
        model.load_state_dict(state)
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model


def patches_to_features(extractor: Any, patch_list: list[Any]
                        ) -> tuple[list, bool]:
    """(one feature list per patch, whether the weights were downloaded):
    patches in batches of ``BATCH_SIZE`` through ``net.extract_features``."""
    stream, loaded_remotely = extractor.load_datastream('weights')
    net = type(extractor).load_weights(stream)
    net.eval()
    to_tensor = to_tensor_transform()
    size = extractor.BATCH_SIZE
    features: list = []
    with config.log_entry_and_exit('forward pass through net'):
        for start in range(0, len(patch_list), size):
            batch = torch.stack([to_tensor(p) for p in
                                 patch_list[start:start + size]])
            with torch.no_grad():
                features.extend(net.extract_features(batch).tolist())
    return features, loaded_remotely
