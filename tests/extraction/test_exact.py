"""Patches whose features float32 cannot carry are recomputed in float64.

On a black-and-white image the calibrated test network's features reach
~8000 and float32 results wander ~10 from the float64 truth (PySpacer's
own by 13-19), so the float64 path must give those patches features
within float32 rounding of the truth, while ordinary patches never pay
for it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from PIL import Image

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import NonFiniteFeaturesError, WeightsLoadError
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime import engine, pt_reader, pt_writer
from spacer_worker.extractors.runtime.calibration import synthetic_texture
from spacer_worker.extractors.runtime.exact import LARGE_FEATURE, ExactFallback
from spacer_worker.extractors.runtime.folded import conformed_state
from spacer_worker.extractors.runtime.patches import crop_patch
from spacer_worker.extractors.runtime.weights import fetch, load_arrays
from tests.fidelity import bilevel_image, float64_features

POINTS = [(10, 20), (120, 200)]


def _reference(weights) -> dict[str, np.ndarray]:
    return conformed_state(load_arrays(fetch(weights.extractor()), 'weights'),
                           'weights')


def _float64_features(weights, im: Image.Image) -> np.ndarray:
    return float64_features(weights.path, im, POINTS)


def test_features_beyond_float32s_reach_come_from_float64(weights, backend,
                                                          caplog):
    # Given a black-and-white image, where features reach thousands,
    im = bilevel_image()
    truth = _float64_features(weights, im)
    assert np.abs(truth).max() > 10 * LARGE_FEATURE
    # when the extractor runs on it,
    extractor = weights.extractor()
    with caplog.at_level(logging.INFO, 'spacer_worker.extractors.runtime'):
        features, _ = extractor(im, POINTS)
    # then both patches took the float64 path, the log said so,
    network = engine.cached_network(weights.sha256)
    assert network is not None and network.exact.patches == len(POINTS)
    assert 'recomputed in float64' in caplog.text
    # and their features are the float64 ones rounded to float32 (float32
    # arithmetic is ~10 off here, 1e4 times this tolerance).
    ours = features.feature_array()
    tolerance = 1e-6 * float(np.abs(truth).max())
    assert float(np.abs(ours - truth).max()) <= tolerance


def test_ordinary_patches_never_take_the_float64_path(weights, image_cases,
                                                      backend):
    # Given the ordinary test images (RGB, RGBA, grey, palette, 16-bit),
    extractor = weights.extractor()
    for case in image_cases:
        # when their points are extracted,
        extractor(Image.open(case.path), case.rowcols)
    # then no patch was recomputed.
    network = engine.cached_network(weights.sha256)
    assert network is not None and network.exact.patches == 0


def test_a_non_finite_row_is_recomputed(weights):
    # Given a batch whose float32 features overflowed in one row,
    im = bilevel_image()
    patches = np.stack([crop_patch(im, r, c) for r, c in POINTS])
    features = np.full((2, 1280), 0.5, np.float32)
    features[1, 7] = np.nan
    # when the fallback checks it,
    fallback = ExactFallback(_reference(weights))
    assert fallback.refine(patches, features) == 1
    # then that row holds the float64 features, and the other is untouched.
    truth = _float64_features(weights, im)
    assert np.isfinite(features).all()
    assert np.abs(features[1] - truth[1]).max() <= \
        1e-6 * float(np.abs(truth[1]).max())
    assert (features[0] == 0.5).all()


def test_the_threshold_is_a_setting_and_zero_turns_it_off(weights,
                                                          monkeypatch):
    # Given the float64 path turned off,
    monkeypatch.setenv('SPACER_EXTRACT_FLOAT64_ABOVE', '0')
    extractor = weights.extractor()
    # when a black-and-white image is extracted,
    features, _ = extractor(bilevel_image(), POINTS)
    # then no patch was recomputed and the features are float32's.
    network = engine.cached_network(weights.sha256)
    assert network is not None and network.exact.above == math.inf
    assert network.exact.patches == 0
    assert np.abs(features.feature_array()).max() > 10 * LARGE_FEATURE


def test_non_finite_rows_are_recomputed_even_with_the_path_off(weights):
    # Given the fallback of a network whose large-feature path is off (fp16,
    # or EXTRACT_FLOAT64_ABOVE=0), and a batch with an overflowed row
    # (inf: fp16 tops out at 65504) beside a large but finite one,
    im = bilevel_image()
    patches = np.stack([crop_patch(im, r, c) for r, c in POINTS])
    truth = _float64_features(weights, im)
    features = truth.astype(np.float32)
    features[1, 3] = np.inf
    fallback = ExactFallback(_reference(weights), above=math.inf)
    # when it checks them, only the overflowed row is recomputed.
    assert fallback.refine(patches, features) == 1
    assert np.isfinite(features).all()
    assert np.abs(features[1] - truth[1]).max() <= \
        1e-6 * float(np.abs(truth[1]).max())


def _saved_with(weights, tmp_path, change) -> EfficientNetExtractor:
    content = pt_reader.load(weights.path.read_bytes())
    change(content['net'])
    path = tmp_path / 'changed.pt'
    path.write_bytes(pt_writer.save(content))
    return EfficientNetExtractor(data_locations={
        'weights': DataLocation('filesystem', str(path))})


def test_weights_holding_nan_are_refused_by_name(weights, tmp_path):
    # Given weights with one NaN (a damaged file, a diverged training),
    def poison(state):
        state['_blocks.3._bn1.running_var'][5] = float('nan')
    extractor = _saved_with(weights, tmp_path, poison)
    # then building the network fails, naming the tensor, before any patch.
    with pytest.raises(WeightsLoadError,
                       match=r'NaN or infinite .*_blocks\.3\._bn1\.running_var'):
        extractor(Image.new('RGB', (300, 200)), POINTS)


def test_features_out_of_float32s_range_fail_the_extraction(weights, tmp_path,
                                                            backend):
    # Given finite weights that drive the features past float32's range
    # (3.4e38) on every patch,
    def inflate(state):
        # (the head's batch norm scales by 3e38: features reach ~5e38)
        state['_bn1.weight'] *= np.float32(3e38)
    extractor = _saved_with(weights, tmp_path, inflate)
    # then the extraction fails with a typed error instead of writing
    # infinite features (float64 has the range; a float32 file does not).
    with pytest.raises(NonFiniteFeaturesError, match='even in float64'):
        extractor(synthetic_texture(np.random.default_rng(3), 256), POINTS)


@pytest.mark.parametrize('value', ['-1', 'nan'])
def test_a_bad_threshold_is_a_config_error(weights, monkeypatch, value):
    from spacer_worker.exceptions import ConfigError
    monkeypatch.setenv('SPACER_EXTRACT_FLOAT64_ABOVE', value)
    with pytest.raises(ConfigError, match='EXTRACT_FLOAT64_ABOVE'):
        weights.extractor()(bilevel_image(), POINTS)


def test_patches_of_one_colour_come_from_float64_once_per_colour(weights,
                                                                 backend):
    # Given an image that is white but for a band of texture (an
    # overexposed photo: white patches have constant maps, whose float32
    # rounding is the same everywhere and is not averaged out),
    texture = np.asarray(synthetic_texture(np.random.default_rng(3), 256)
                         .resize((400, 300)))
    pixels = np.full((300, 1200, 3), 255, np.uint8)
    pixels[:, 800:] = texture
    im = Image.fromarray(pixels)
    points = [(150, 150), (40, 300), (260, 500), (150, 1000)]
    truth = float64_features(weights.path, im, points)
    # when the extractor runs on it,
    features, _ = weights.extractor()(im, points)
    ours = features.feature_array()
    # then the white patches have the float64 features rounded to float32
    # (float32 arithmetic drifts ~1e-4 here),
    scale = float(np.abs(truth[:3]).max())
    assert np.abs(ours[:3] - truth[:3]).max() <= 1e-6 * scale
    # the textured one stays float32's own (and within the rule's 1e-4),
    network = engine.cached_network(weights.sha256)
    assert network.exact.patches == 3
    assert np.abs(ours[3] - truth[3]).max() < 1e-4
    # and the three white ones cost one float64 run.
    runs = []
    original = network.exact._float64
    network.exact._float64 = lambda p, b: runs.append(len(p)) or original(p, b)
    again, _ = weights.extractor()(im, points)
    assert runs == []  # white is known by now
    np.testing.assert_array_equal(again.feature_array(), ours)


def test_a_patch_of_one_colour_is_told_from_one_that_nearly_is():
    from spacer_worker.extractors.runtime.exact import uniform_colour

    patch = np.full((224, 224, 4), 200, np.uint8)
    patch[..., 3] = 255  # the padding byte is not a colour
    patch[..., 1] = 17
    assert uniform_colour(patch) == (200, 17, 200)
    assert uniform_colour(patch[..., :3]) == (200, 17, 200)
    patch[223, 223, 2] = 201  # one value off, in the last pixel
    assert uniform_colour(patch) is None
