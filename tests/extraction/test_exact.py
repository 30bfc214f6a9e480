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
import torch
from PIL import Image

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import NonFiniteFeaturesError, WeightsLoadError
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime import engine
from spacer_worker.extractors.runtime.calibration import synthetic_texture
from spacer_worker.extractors.runtime.exact import LARGE_FEATURE, ExactFallback
from spacer_worker.extractors.runtime.network import EfficientNetB0
from spacer_worker.extractors.runtime.patches import crop_patch
from spacer_worker.extractors.runtime.weights import fetch, load_state_dict
from tests.fidelity import bilevel_image, float64_features

POINTS = [(10, 20), (120, 200)]


def _reference(weights) -> EfficientNetB0:
    net = EfficientNetB0()
    net.load_state_dict(load_state_dict(fetch(weights.extractor()),
                                        'weights'))
    return net.eval()


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
    fallback = ExactFallback(_reference(weights), torch.device('cpu'))
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
    fallback = ExactFallback(_reference(weights), torch.device('cpu'),
                             above=math.inf)
    # when it checks them, only the overflowed row is recomputed.
    assert fallback.refine(patches, features) == 1
    assert np.isfinite(features).all()
    assert np.abs(features[1] - truth[1]).max() <= \
        1e-6 * float(np.abs(truth[1]).max())


def _saved_with(weights, tmp_path, change) -> EfficientNetExtractor:
    content = torch.load(weights.path, weights_only=True)
    change(content['net'])
    path = tmp_path / 'changed.pt'
    torch.save(content, path)
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
        state['_bn1.weight'].mul_(1e38)
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
