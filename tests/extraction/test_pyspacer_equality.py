"""Features equal PySpacer 0.14.0's within 1e-4 for the same image, points
and weights: JPEG and PNG files in RGB, RGBA, L, P and I;16, points on every
edge and corner, and an image smaller than a 224 px crop.

PySpacer runs once per module (one subprocess for every image) in its
reference virtualenv; the weights are calibrated so features are of order
0.1-1, which is what makes a 1e-4 tolerance meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spacer_worker import tasks
from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.messages import ExtractFeaturesMsg
from tests.reference import run_reference

pytestmark = pytest.mark.reference

TOLERANCE = 1e-4

PYSPACER_EXTRACT = '''
import numpy as np
from PIL import Image
from spacer.data_classes import DataLocation
from spacer.extractors.efficientnet import EfficientNetExtractor

extractor = EfficientNetExtractor(
    data_locations={'weights': DataLocation('filesystem', PAYLOAD['weights'])},
    data_hashes={'weights': PAYLOAD['sha256']})
for case in PAYLOAD['cases']:
    features, _ = extractor(Image.open(case['path']),
                            [tuple(rc) for rc in case['rowcols']])
    assert [(pf.row, pf.col) for pf in features.point_features] == \\
        [tuple(rc) for rc in case['rowcols']]
    np.save(case['out'], np.array([pf.data for pf in features.point_features],
                                  dtype=np.float32))
RESULT = 'ok'
'''


@pytest.fixture(scope='module')
def pyspacer_features(pyspacer_reference, image_cases, weights,
                      tmp_path_factory) -> dict[str, np.ndarray]:
    out_dir = tmp_path_factory.mktemp('pyspacer_features')
    payload = {
        'weights': str(weights.path), 'sha256': weights.sha256,
        'cases': [{'path': str(c.path), 'rowcols': c.rowcols,
                   'out': str(out_dir / f'{c.name}.npy')}
                  for c in image_cases],
    }
    run_reference(PYSPACER_EXTRACT, payload)
    return {c.name: np.load(out_dir / f'{c.name}.npy') for c in image_cases}


@pytest.fixture(params=['onnxruntime', 'torch'])
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', request.param)
    monkeypatch.setenv('SPACER_TORCH_DEVICE', 'cpu')
    return request.param


def test_calibrated_weights_give_features_of_order_one(pyspacer_features):
    # Given PySpacer's own features with the calibrated test weights,
    # then they are of a size where 1e-4 is a real tolerance.
    everything = np.concatenate(list(pyspacer_features.values()))
    mean_abs = float(np.abs(everything).mean())
    assert 0.05 < mean_abs < 2.0, mean_abs
    assert float(np.abs(everything).max()) < 20.0
    assert float((np.abs(everything) > 1e-3).mean()) > 0.9


def test_features_equal_pyspacer_for_every_mode_and_edge(
        backend, image_cases, weights, pyspacer_features):
    # Given each image file opened as PySpacer's task opens it,
    extractor = weights.extractor()
    for case in image_cases:
        image = Image.open(case.path)
        # when our extractor runs at the same points,
        features, return_msg = extractor(image, case.rowcols)
        # then every vector matches PySpacer's within 1e-4, in order.
        ours = features.feature_array()
        theirs = pyspacer_features[case.name]
        assert ours.shape == theirs.shape == (len(case.rowcols), 1280)
        assert list(zip(features.rows, features.cols, strict=True)) == \
            case.rowcols
        difference = float(np.abs(ours - theirs).max())
        assert difference < TOLERANCE, (case.name, case.mode, difference)
        assert return_msg.extractor_loaded_remotely is False


def test_extract_task_stores_pyspacer_equal_features(
        image_cases, weights, pyspacer_features, tmp_path):
    # Given an extract_features message over files on disk,
    case = next(c for c in image_cases if c.name == 'small.png')
    feature_path = tmp_path / 'small.featurevector'
    msg = ExtractFeaturesMsg(
        job_token='small', extractor=weights.extractor(),
        rowcols=case.rowcols,
        image_loc=DataLocation('filesystem', str(case.path)),
        feature_loc=DataLocation('filesystem', str(feature_path)))
    # when the task runs,
    result = tasks.extract_features(msg)
    # then the stored file holds PySpacer's features for those points.
    stored = ImageFeatures.load(DataLocation('filesystem', str(feature_path)))
    assert stored.npoints == len(case.rowcols)
    assert stored.feature_dim == 1280
    difference = np.abs(stored.feature_array() - pyspacer_features[case.name])
    assert float(difference.max()) < TOLERANCE
    assert result.runtime > 0
