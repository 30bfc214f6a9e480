"""Test weights whose features are of a realistic size.

Randomly initialised EfficientNet weights give features near 1e-13: each
stage shrinks the activations, so any comparison tolerance passes trivially.
Re-estimating every BatchNorm's running statistics on image patches makes
each layer's output roughly unit-variance, and the pooled features land in
0.1-1 like trained weights'. The file has PySpacer's layout
(``torch.save({'net': state_dict})``, written by :mod:`.pt_writer`), so
PySpacer loads it unchanged. Used by tests, the demo and the benchmarks;
it is not a trained model.

No torch: the random initialisation draws from PyTorch's default
distributions (uniform within 1/sqrt(fan_in)) with numpy's generator, and
the statistics are measured by the numpy network (:mod:`.numpy_net`) in
training mode, float32 activations and float64 sums, one batch of
patches: the running mean is the batch mean and the running variance its
unbiased variance, as a BatchNorm with ``momentum=None`` records them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from PIL import Image

from spacer_worker.extractors.runtime import pt_writer
from spacer_worker.extractors.runtime.architecture import (
    BN_COUNTER,
    BN_EPS,
    CROP_SIZE,
    state_shapes,
)
from spacer_worker.extractors.runtime.numpy_net import NumpyEfficientNet
from spacer_worker.extractors.runtime.patches import crop_patch
from spacer_worker.storage import storage_factory

CALIBRATION_PATCHES = 32


def synthetic_texture(rng: np.random.Generator, size: int = 512
                      ) -> Image.Image:
    """A colour image with structure at several scales (not white noise)."""
    field = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.15), (size, 0.05)):
        coarse = rng.random((cells, cells, 3), dtype=np.float32)
        layers = [np.asarray(Image.fromarray(coarse[..., c], 'F').resize(
            (size, size), Image.BILINEAR)) for c in range(3)]
        field += weight * np.stack(layers, axis=-1)
    return Image.fromarray(np.clip(field * 255, 0, 255).astype(np.uint8))


def calibration_patches(images: Sequence[Image.Image] | None, seed: int,
                        count: int = CALIBRATION_PATCHES) -> np.ndarray:
    """``count`` random [224, 224, 3] uint8 patches of ``images``."""
    rng = np.random.default_rng(seed)
    if not images:
        images = [synthetic_texture(rng) for _ in range(4)]
    patches = []
    for i in range(count):
        im = images[i % len(images)]
        width, height = im.size
        row, col = int(rng.integers(height)), int(rng.integers(width))
        patches.append(crop_patch(im, row, col, CROP_SIZE))
    return np.stack(patches)


def random_state(seed: int) -> OrderedDict[str, np.ndarray]:
    """An untrained EfficientNet-b0 state dict: weights and biases uniform
    within 1/sqrt(fan_in) (PyTorch's defaults), batch norms neutral."""
    rng = np.random.default_rng([seed, 0xEFF])
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    fan_in = 1
    for name, shape in state_shapes().items():
        part = name.rsplit('.', 1)[1]
        if name.endswith(BN_COUNTER):
            state[name] = np.array(0, np.int64)
        elif part in ('running_mean', 'running_var') or '._bn' in name \
                or name.startswith('_bn'):
            fill = 1.0 if part in ('weight', 'running_var') else 0.0
            state[name] = np.full(shape, fill, np.float32)
        else:
            if part == 'weight':
                fan_in = math.prod(shape[1:])
            bound = 1 / math.sqrt(fan_in)
            state[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return state


class _BatchStatistics:
    """A training-mode batch norm that records what it normalised with."""

    def __init__(self, state: OrderedDict[str, np.ndarray]):
        self.state = state

    def __call__(self, prefix: str, x: np.ndarray) -> np.ndarray:
        count = x.shape[0] * x.shape[1] * x.shape[2]
        mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
        squares = np.zeros_like(mean)
        for patch in x:  # float64 one patch at a time: bounded memory
            centred = patch.astype(np.float64) - mean
            squares += np.einsum('hwc,hwc->c', centred, centred)
        self.state[f'{prefix}.running_mean'] = mean.astype(np.float32)
        self.state[f'{prefix}.running_var'] = (
            squares / (count - 1)).astype(np.float32)
        self.state[f'{prefix}.{BN_COUNTER}'] = np.array(1, np.int64)
        scale = self.state[f'{prefix}.weight'].astype(np.float64) / np.sqrt(
            squares / count + BN_EPS)
        shift = self.state[f'{prefix}.bias'] - mean * scale
        return x * scale.astype(np.float32) + shift.astype(np.float32)


def calibrated_state(images: Sequence[Image.Image] | None = None,
                     seed: int = 0) -> OrderedDict[str, np.ndarray]:
    """A seeded random EfficientNet-b0 state dict with its BatchNorm
    statistics set on patches of ``images`` (synthetic textures without)."""
    state = random_state(seed)
    patches = calibration_patches(images, seed)
    network = NumpyEfficientNet(state, np.float32)
    network.features(patches, batch_norm=_BatchStatistics(state))
    return state


def make_calibrated_weights(path: str | os.PathLike,
                            images: Sequence[Image.Image] | None = None,
                            seed: int = 0) -> str:
    """Write a PySpacer-compatible weights file; return its sha256.

    ``images`` (PIL images) supply the calibration patches; without them,
    synthetic textures do. Same seed and images give the same weights.
    """
    data = pt_writer.save({'net': calibrated_state(images, seed)})
    # Atomic, and readable as a plain file would be (umask applies).
    storage_factory('filesystem').store(os.fspath(path), data)
    return hashlib.sha256(data).hexdigest()
