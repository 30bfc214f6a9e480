"""A CPU worker without torch extracts the same features, bit for bit.

The ``worker`` extra installs no torch: weights are read by
``pt_reader``, folded and (for the float64 path) run in numpy, and the
network runs in ONNX Runtime. These tests run that path in a process
where ``import torch`` fails, and hold it against torch where this
venv has it: the same features bit for bit, folded parameters equal to
PyTorch's fold, float64 features PyTorch's to float32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from spacer_worker.extractors.runtime.architecture import BN_EPS
from spacer_worker.extractors.runtime.folded import (
    conformed_state,
    fold_network,
)
from spacer_worker.extractors.runtime.weights import fetch, load_arrays
from tests.extraction.conftest import needs_torch
from tests.fidelity import bilevel_image, float64_features

REPO = Path(__file__).resolve().parents[2]

# Runs in a child whose `import torch` fails: extracts every case and
# saves the features, then says which torch-like modules it loaded.
WITHOUT_TORCH = '''
import json, sys
sys.modules['torch'] = None  # import torch -> ImportError
sys.modules['torchvision'] = None
import numpy as np
from PIL import Image
from spacer_worker.data_classes import DataLocation
from spacer_worker.extractors import EfficientNetExtractor
job = json.loads(sys.argv[1])
extractor = EfficientNetExtractor(
    data_locations={'weights': DataLocation('filesystem', job['weights'])},
    data_hashes={'weights': job['sha256']})
for case in job['cases']:
    features, _ = extractor(Image.open(case['path']),
                            [tuple(rc) for rc in case['rowcols']])
    np.save(case['out'], features.feature_array())
if job.get('calibrate'):
    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    print('SHA', make_calibrated_weights(job['calibrate'], seed=4))
print('LOADED', sorted(m for m in sys.modules
                       if m.split('.')[0] in ('torch', 'torchvision')
                       and sys.modules[m] is not None))
'''


def _run_without_torch(job: dict) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')}
    env['PYTHONPATH'] = str(REPO)
    env['SPACER_EXTRACT_THREADS'] = '1'
    proc = subprocess.run([sys.executable, '-c', WITHOUT_TORCH,
                           json.dumps(job)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_worker_without_torch_gives_the_same_features_bit_for_bit(
        weights, image_cases, tmp_path, monkeypatch):
    # Given the ordinary images, a black-and-white one (every patch takes
    # the float64 path) and a white one (one colour: float64 too),
    bilevel = tmp_path / 'bilevel.png'
    bilevel_image().save(bilevel)
    white = tmp_path / 'white.png'
    Image.new('RGB', (300, 240), (255, 255, 255)).save(white)
    cases = [(c.path, c.rowcols) for c in image_cases]
    cases += [(bilevel, [(10, 20), (120, 200)]), (white, [(0, 0), (120, 150)])]
    job = {'weights': str(weights.path), 'sha256': weights.sha256,
           'calibrate': str(tmp_path / 'calibrated.pt'),
           'cases': [{'path': str(p), 'rowcols': rc,
                      'out': str(tmp_path / f'{i}.npy')}
                     for i, (p, rc) in enumerate(cases)]}
    # when a process that cannot import torch extracts them,
    out = _run_without_torch(job)
    # then it never loaded torch,
    assert 'LOADED []' in out, out
    # and this process (torch importable where the venv has it) gets the
    # same features, bit for bit, on one thread as there.
    monkeypatch.setenv('SPACER_EXTRACT_THREADS', '1')
    extractor = weights.extractor()
    for i, (path, rowcols) in enumerate(cases):
        ours, _ = extractor(Image.open(path), rowcols)
        theirs = np.load(tmp_path / f'{i}.npy')
        assert np.array_equal(ours.feature_array(), theirs), path.name
    # Calibrated weights do not depend on torch either: the same bytes.
    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    sha = make_calibrated_weights(tmp_path / 'here.pt', seed=4)
    assert f'SHA {sha}' in out


def test_folding_in_numpy_gives_pytorchs_folded_parameters(weights):
    torch = needs_torch()
    # Given the weights as PyTorch loads them,
    state = torch.load(weights.path, weights_only=True)['net']

    def torch_fold(conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
        # PyTorch's arithmetic, in float64, rounded once into float32.
        scale = state[f'{bn}.weight'].double() / torch.sqrt(
            state[f'{bn}.running_var'].double() + BN_EPS)
        bias = state[f'{bn}.bias'].double() - \
            state[f'{bn}.running_mean'].double() * scale
        weight = state[f'{conv}.weight'].double() * scale.reshape(-1, 1, 1, 1)
        return weight.float().numpy(), bias.float().numpy()

    # when numpy folds the same file,
    net = fold_network(conformed_state(
        load_arrays(fetch(weights.extractor()), 'w'), 'w'))
    # then every folded conv is PyTorch's, bit for bit.
    pairs = [('_conv_head', '_bn1', net.head)]
    for i, block in enumerate(net.blocks):
        b = f'_blocks.{i}'
        if block.expand is not None:
            pairs.append((f'{b}._expand_conv', f'{b}._bn0', block.expand))
        pairs.append((f'{b}._depthwise_conv', f'{b}._bn1', block.depthwise))
        pairs.append((f'{b}._project_conv', f'{b}._bn2', block.project))
    for conv, bn, folded in pairs:
        weight, bias = torch_fold(conv, bn)
        assert np.array_equal(folded.weight, weight), conv
        assert np.array_equal(folded.bias, bias), conv
    assert len(pairs) == 1 + 16 * 2 + 15


def test_the_numpy_float64_network_is_pytorchs_to_float32_rounding(weights):
    needs_torch()
    from spacer_worker.extractors.runtime.numpy_net import NumpyEfficientNet
    from spacer_worker.extractors.runtime.patches import crop_patch

    # Given patches where features reach thousands (float32 cannot carry
    # them: the float64 path's patches),
    im = bilevel_image()
    points = [(10, 20), (120, 200), (200, 30)]
    truth = float64_features(weights.path, im, points)  # PyTorch, float64
    # when the numpy network runs them in float64,
    net = NumpyEfficientNet(conformed_state(
        load_arrays(fetch(weights.extractor()), 'w'), 'w'))
    ours = net.features(np.stack([crop_patch(im, r, c) for r, c in points]))
    # then both agree far below float32's resolution, and rounded to
    # float32 they differ at most in a last bit, on a rare feature.
    assert np.abs(ours - truth).max() <= 1e-10 * np.abs(truth).max()
    ours32, truth32 = ours.astype(np.float32), truth.astype(np.float32)
    ulps = np.abs(ours32.view(np.int32).astype(np.int64)
                  - truth32.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert (ulps == 0).mean() > 0.99
