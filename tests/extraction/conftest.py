"""Fixtures for extraction tests: real image files, calibrated weights, and
a local HTTP server for remote weights."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spacer_worker.data_classes import DataLocation
from spacer_worker.extractors import EfficientNetExtractor


@dataclass(frozen=True)
class ImageCase:
    name: str
    path: Path
    mode: str
    rowcols: list[tuple[int, int]]


def edge_points(width: int, height: int, seed: int) -> list[tuple[int, int]]:
    """Corners, edge midpoints, the centre and two random points."""
    rng = np.random.default_rng(seed)
    r, c = height - 1, width - 1
    points = [(0, 0), (0, c), (r, 0), (r, c), (0, c // 2), (r // 2, 0),
              (r // 2, c // 2)]
    points += [(int(rng.integers(height)), int(rng.integers(width)))
               for _ in range(2)]
    return points


def _texture(width: int, height: int, seed: int) -> np.ndarray:
    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    base = synthetic_texture(np.random.default_rng(seed), 256)
    return np.asarray(base.resize((width, height), Image.BILINEAR))


def _write_images(directory: Path) -> list[ImageCase]:
    cases = []

    def add(name: str, image: Image.Image, fmt: str, **save_args) -> None:
        path = directory / name
        image.save(path, fmt, **save_args)
        reopened = Image.open(path)
        width, height = reopened.size
        cases.append(ImageCase(name, path, reopened.mode,
                               edge_points(width, height, len(cases))))

    rgb = _texture(400, 300, 1)
    add('rgb.jpg', Image.fromarray(rgb), 'JPEG', quality=90)
    rgba = np.dstack([_texture(300, 260, 2), _texture(300, 260, 3)[..., :1]])
    add('rgba.png', Image.fromarray(rgba, 'RGBA'), 'PNG')
    add('gray.jpg', Image.fromarray(_texture(260, 240, 4)[..., 0]), 'JPEG')
    add('palette.png', Image.fromarray(_texture(250, 250, 5)).quantize(64),
        'PNG')
    # 16-bit grey: Pillow clips to 255 on conversion, so keep values near it.
    grey16 = (_texture(240, 260, 6)[..., 0].astype(np.uint16) * 2)
    add('grey16.png', Image.fromarray(grey16), 'PNG')
    add('small.png', Image.fromarray(_texture(120, 90, 7)), 'PNG')
    return cases


@pytest.fixture(scope='session')
def image_cases(tmp_path_factory) -> list[ImageCase]:
    cases = _write_images(tmp_path_factory.mktemp('extraction_images'))
    modes = {c.mode for c in cases}
    assert {'RGB', 'RGBA', 'L', 'P', 'I;16'} <= modes, modes
    return cases


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str

    def extractor(self, with_hash: bool = True) -> EfficientNetExtractor:
        return EfficientNetExtractor(
            data_locations={'weights': DataLocation('filesystem',
                                                    str(self.path))},
            data_hashes={'weights': self.sha256} if with_hash else None)


@pytest.fixture(scope='session')
def weights(tmp_path_factory, image_cases) -> WeightsFile:
    """EfficientNet weights calibrated on the test images themselves."""
    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    path = tmp_path_factory.mktemp('weights') / 'efficientnet_b0.pt'
    images = [Image.open(c.path) for c in image_cases]
    sha = make_calibrated_weights(path, images=images, seed=0)
    return WeightsFile(path, sha)


def needs_torch() -> Any:
    """torch, or a skip where this venv has none (the worker extra)."""
    return pytest.importorskip(
        'torch', reason="needs torch (the 'gpu' extra) as an oracle or to "
                        "write files as PyTorch does; this venv runs without")


@pytest.fixture(params=['onnxruntime', 'torch', 'torch-cuda'])
def backend(request, monkeypatch) -> str:
    """Each way features are computed: the CPU backends, and PyTorch on a
    GPU where there is one."""
    # torch-cuda: float32 on a GPU (cuDNN would use TF32 unless told not to).
    name, _, device = request.param.partition('-')
    if name == 'torch':
        torch = needs_torch()
        if device == 'cuda' and not torch.cuda.is_available():
            pytest.skip('no CUDA GPU here')
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', name)
    monkeypatch.setenv('SPACER_TORCH_DEVICE', device or 'cpu')
    return request.param


@pytest.fixture(autouse=True)
def _fresh_networks():
    """Each test builds its own networks (settings differ between tests)."""
    from spacer_worker.extractors.runtime import engine
    engine.clear_cache()
    yield
    engine.clear_cache()


class _CountingHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.gets[self.path] = self.server.gets.get(self.path, 0) + 1
        super().do_GET()


@dataclass
class FileServer:
    root: Path
    server: ThreadingHTTPServer

    def url(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f'http://{host}:{port}/{name}'

    def gets(self, name: str) -> int:
        return self.server.gets.get(f'/{name}', 0)


@pytest.fixture
def file_server(tmp_path) -> Iterator[FileServer]:
    """A real HTTP server on 127.0.0.1 serving ``root`` and counting GETs."""
    root = tmp_path / 'served'
    root.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(root))
    server = ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.daemon_threads = True
    server.gets = {}
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(root, server)
    finally:
        server.shutdown()
        server.server_close()
