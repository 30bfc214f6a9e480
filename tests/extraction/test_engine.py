"""The network cache, settings, crop semantics and backends agreeing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spacer_worker.exceptions import ConfigError
from spacer_worker.extractors.runtime import engine
from spacer_worker.extractors.runtime.calibration import make_calibrated_weights
from spacer_worker.extractors.runtime.patches import (
    crop_patch,
    iter_patch_batches,
)
from tests.extraction.conftest import needs_torch

POINTS = [(0, 0), (99, 149), (40, 70)]


def _image(seed: int = 0) -> Image.Image:
    # Texture like the calibration images (white noise would give features
    # in the thousands, where float32 rounding alone exceeds 1e-4).
    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    return synthetic_texture(np.random.default_rng(seed), 256).resize(
        (150, 100))


def test_network_is_built_once_and_reused_without_rereading(weights,
                                                            tmp_path):
    # Given weights referenced with their hash, preloaded in this process,
    copy = tmp_path / 'w.pt'
    copy.write_bytes(weights.path.read_bytes())
    extractor = weights.extractor()
    extractor.data_locations['weights'] = type(
        extractor.data_locations['weights'])('filesystem', str(copy))
    first = engine.preload(extractor)
    before, _ = extractor(_image(), POINTS)
    # when the file disappears, later tasks still run on the same network,
    copy.unlink()
    network, loaded_remotely = engine.get_network(extractor)
    assert network is first and loaded_remotely is False
    after, _ = extractor(_image(), POINTS)
    np.testing.assert_array_equal(after.feature_array(),
                                  before.feature_array())


def test_a_changed_thread_count_or_threshold_gets_a_network_built_for_it(
        weights, monkeypatch):
    # Settings read per call must apply per call: a network built for one
    # thread count or float64 threshold is not served for another.
    import math

    from spacer_worker.extractors.runtime.exact import LARGE_FEATURE
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', 'onnxruntime')
    extractor = weights.extractor()
    monkeypatch.setenv('SPACER_EXTRACT_THREADS', '1')
    one = engine.preload(extractor)
    assert one.backend.streams == 1
    monkeypatch.setenv('SPACER_EXTRACT_THREADS', '2')
    two = engine.preload(extractor)
    assert two is not one and two.backend.streams == 2
    assert engine.preload(extractor) is two
    assert two.exact.above == LARGE_FEATURE
    monkeypatch.setenv('SPACER_EXTRACT_FLOAT64_ABOVE', '0')
    off = engine.preload(extractor)
    assert off is not two and off.exact.above == math.inf
    assert engine.cached_network(weights.sha256) is off


def test_changed_weights_file_without_hash_is_not_served_stale(tmp_path):
    # Given a weights file referenced without a hash,
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.extractors import EfficientNetExtractor
    path = tmp_path / 'w.pt'
    make_calibrated_weights(path, seed=1)
    extractor = EfficientNetExtractor(data_locations={
        'weights': DataLocation('filesystem', str(path))})
    old, _ = extractor(_image(), POINTS)
    # when the file is overwritten with other weights,
    make_calibrated_weights(path, seed=2)
    new, _ = extractor(_image(), POINTS)
    # then the next extraction uses the new weights.
    assert np.abs(new.feature_array() - old.feature_array()).max() > 1e-2


@pytest.mark.parametrize('name, value, match', [
    ('EXTRACT_PRECISION', 'fp16', 'needs a CUDA device'),
    ('EXTRACT_PRECISION', 'int8', 'expected one of fp32, fp16'),
    ('EXTRACT_BACKEND', 'tensorrt', 'expected one of'),
    ('TORCH_DEVICE', 'gpu0', 'not a torch device'),
    ('EXTRACT_BATCH_SIZE', '-2', 'EXTRACT_BATCH_SIZE=-2'),
])
def test_bad_runtime_settings_are_config_errors(weights, monkeypatch, name,
                                                value, match):
    monkeypatch.setenv(f'SPACER_{name}', value)
    monkeypatch.setenv('SPACER_TORCH_DEVICE',
                       value if name == 'TORCH_DEVICE' else 'cpu')
    with pytest.raises(ConfigError, match=match):
        weights.extractor()(_image(), POINTS)


def _has_cuda() -> bool:
    torch = engine._torch()
    return torch is not None and torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason='a GPU is present')
def test_cuda_requested_without_a_gpu_is_a_config_error(weights, monkeypatch):
    # Without a GPU torch says so; without torch, the error says to
    # install the gpu extra.
    monkeypatch.setenv('SPACER_TORCH_DEVICE', 'cuda')
    said = 'sees no CUDA' if engine._torch() else r"spacer_worker\[gpu\]"
    with pytest.raises(ConfigError, match=said):
        weights.extractor()(_image(), POINTS)


def test_the_torch_backend_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setattr(engine, '_torch', lambda: None)
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', 'torch')
    with pytest.raises(ConfigError, match=r"pip install 'spacer_worker\[gpu\]'"):
        engine.runtime_settings()
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', 'auto')
    assert engine.runtime_settings().backend == 'onnxruntime'


def test_device_auto_picks_cpu_without_gpu_and_onnxruntime_there(monkeypatch):
    settings = engine.runtime_settings()
    expected = 'cuda' if _has_cuda() else 'cpu'
    assert settings.device == expected
    if expected == 'cpu':
        assert settings.backend == 'onnxruntime'
        assert settings.precision == 'fp32'


def test_backends_and_batch_sizes_agree(weights, monkeypatch):
    # The same features, within float rounding, whatever runs them.
    needs_torch()
    image = _image(3)
    results = []
    for backend, batch in (('onnxruntime', 0), ('onnxruntime', 1),
                           ('torch', 0), ('torch', 2)):
        monkeypatch.setenv('SPACER_EXTRACT_BACKEND', backend)
        monkeypatch.setenv('SPACER_EXTRACT_BATCH_SIZE', str(batch))
        monkeypatch.setenv('SPACER_TORCH_DEVICE', 'cpu')
        features, _ = weights.extractor()(image, POINTS)
        results.append(features.feature_array())
    assert 0.05 < np.abs(results[0]).mean() < 10
    for other in results[1:]:
        assert np.abs(other - results[0]).max() < 1e-4


def _pyspacer_crop(im: Image.Image, row: int, col: int) -> np.ndarray:
    # PySpacer's documented semantics, on the whole padded image.
    array = np.pad(np.array(im.convert('RGB')), ((224, 224), (224, 224), (0, 0)),
                   mode='reflect')
    top, left = row + 224 - 112, col + 224 - 112
    return array[top:top + 224, left:left + 224]


@pytest.mark.parametrize('size', [(300, 250), (100, 60), (224, 224), (1, 1),
                                  (225, 3)])
@pytest.mark.parametrize('mode', ['RGB', 'RGBA', 'L', 'P', 'I;16', 'CMYK'])
def test_window_crops_equal_whole_image_padding(size, mode):
    width, height = size
    rng = np.random.default_rng(width * height)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8))
    if mode == 'I;16':
        image = Image.fromarray(rng.integers(0, 400, (height, width),
                                             np.uint16))
    elif mode == 'P':
        image = rgb.quantize(32)
    elif mode == 'RGBA':
        image = Image.fromarray(rng.integers(0, 256, (height, width, 4),
                                             np.uint8), 'RGBA')
    else:
        image = rgb.convert(mode)
    assert image.mode == mode
    points = {(0, 0), (height - 1, width - 1), (0, width - 1),
              (height - 1, 0), (height // 2, width // 2)}
    for row, col in sorted(points):
        np.testing.assert_array_equal(crop_patch(image, row, col),
                                      _pyspacer_crop(image, row, col))


def test_patch_batches_never_exceed_the_batch_size():
    image = _image()
    batches = list(iter_patch_batches(image, [(1, 1)] * 10, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(b.shape[1:] == (224, 224, 3) and b.dtype == np.uint8
               for b in batches)


def test_split_network_gives_the_whole_networks_features_exactly():
    # The ONNX backend runs the early blocks patch by patch and the rest on
    # the batch; chained, the two graphs must be the one network at any
    # split point (the same kernels: bit for bit here; a CPU whose kernels
    # depend on the batch size may round differently).
    import onnxruntime as ort

    from spacer_worker.extractors.runtime.calibration import calibrated_state
    from spacer_worker.extractors.runtime.folded import fold_network
    from spacer_worker.extractors.runtime.onnx_graph import (
        ACTIVATION_NAME,
        INPUT_NAME,
        SPLIT_BLOCK,
        build_onnx_model,
        build_split_models,
    )

    def session(model: bytes) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(model, options,
                                    providers=['CPUExecutionProvider'])

    net = fold_network(calibrated_state(seed=1))
    image = np.asarray(_image(4).convert('RGB').resize((448, 224)))
    patches = np.stack([image[:, :224], image[:, 224:]])
    whole = session(build_onnx_model(net)).run(
        None, {INPUT_NAME: patches})[0]
    assert whole.shape == (2, 1280) and np.abs(whole).mean() > 0.05
    for split in (1, SPLIT_BLOCK, len(net.blocks) - 1):
        front, back = (session(m) for m in build_split_models(net, split))
        activations = np.concatenate([
            front.run(None, {INPUT_NAME: patches[i:i + 1]})[0]
            for i in range(2)])
        chained = back.run(None, {ACTIVATION_NAME: activations})[0]
        assert np.abs(chained - whole).max() <= 1e-6 * np.abs(whole).max(), split
    with pytest.raises(ValueError, match='not inside the network'):
        build_split_models(net, 0)
