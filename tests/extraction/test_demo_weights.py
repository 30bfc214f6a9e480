"""The demo's weights, calibrated and written without torch, are a file
PySpacer 0.14 loads, and give there the features the demo stored."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures
from tests.reference import run_reference

pytestmark = [pytest.mark.slow, pytest.mark.reference]

PYSPACER_FEATURES = '''
import numpy as np
from spacer.data_classes import DataLocation
from spacer.extractors.efficientnet import EfficientNetExtractor
from spacer.storage import load_image

extractor = EfficientNetExtractor(
    data_locations={'weights': DataLocation('filesystem', PAYLOAD['weights'])})
features, _ = extractor(load_image(DataLocation('filesystem', PAYLOAD['image'])),
                        [tuple(rc) for rc in PAYLOAD['rowcols']])
RESULT = [[float(v) for v in pf.data] for pf in features.point_features]
'''


def test_the_demos_weights_load_in_pyspacer_with_the_same_features(
        embedded_demo, pyspacer_reference):
    # Given the demo run (its weights calibrated without torch),
    assert embedded_demo.done.returncode == 0, embedded_demo.done.stderr[-2000:]
    out = embedded_demo.out
    stored = ImageFeatures.load(DataLocation(
        'filesystem', str(out / 'features' / 'img000.featurevector')))
    rowcols = list(zip(stored.rows, stored.cols, strict=True))[:8]
    # when PySpacer loads them (torch.load) and extracts the same points,
    theirs = np.array(run_reference(PYSPACER_FEATURES, {
        'weights': str(out / 'model' / 'efficientnet_b0_calibrated.pt'),
        'image': str(out / 'images' / 'img000.jpg'),
        'rowcols': [[int(r), int(c)] for r, c in rowcols]}), np.float32)
    # then its features are the demo's, within the fidelity rule's 1e-4.
    ours = stored.feature_array()[:8]
    assert theirs.shape == ours.shape == (8, 1280)
    assert 0.05 < float(np.abs(theirs).mean()) < 10
    assert float(np.abs(ours - theirs).max()) <= 1e-4
