"""Test weights whose features are of a realistic size.

Randomly initialised EfficientNet weights give features near 1e-13: each
stage shrinks the activations, so any comparison tolerance passes trivially.
Re-estimating every BatchNorm's running statistics on image patches makes
each layer's output roughly unit-variance, and the pooled features land in
0.1-1 like trained weights'. The file has PySpacer's layout
(``torch.save({'net': state_dict})``), so PySpacer loads it unchanged.
Used by tests, the demo and the benchmarks; it is not a trained model.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from spacer_worker.extractors.runtime.network import CROP_SIZE, EfficientNetB0
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
                        count: int = CALIBRATION_PATCHES) -> torch.Tensor:
    """``count`` random patches of ``images`` as a [0, 1] float batch."""
    rng = np.random.default_rng(seed)
    if not images:
        images = [synthetic_texture(rng) for _ in range(4)]
    patches = []
    for i in range(count):
        im = images[i % len(images)]
        width, height = im.size
        row, col = int(rng.integers(height)), int(rng.integers(width))
        patches.append(crop_patch(im, row, col, CROP_SIZE))
    batch = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2)
    return batch.float().div(255)


def calibrated_network(images: Sequence[Image.Image] | None = None,
                       seed: int = 0) -> EfficientNetB0:
    """A seeded random EfficientNet-b0 with BatchNorm stats set on patches."""
    torch.manual_seed(seed)
    net = EfficientNetB0()
    batch = calibration_patches(images, seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # plain average of what it sees
    net.train()
    # One thread: the statistics (float32 sums) then do not depend on the
    # caller's thread count, so the same seed gives the same file.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            net.features(batch)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.01
    return net


def make_calibrated_weights(path: str | os.PathLike,
                            images: Sequence[Image.Image] | None = None,
                            seed: int = 0) -> str:
    """Write a PySpacer-compatible weights file; return its sha256.

    ``images`` (PIL images) supply the calibration patches; without them,
    synthetic textures do. Same seed and images give the same weights.
    """
    net = calibrated_network(images, seed)
    buffer = io.BytesIO()
    torch.save({'net': net.state_dict()}, buffer)
    data = buffer.getvalue()
    # Atomic, and readable as a plain file would be (umask applies).
    storage_factory('filesystem').store(os.fspath(path), data)
    return hashlib.sha256(data).hexdigest()
