"""The fidelity rule for extracted features, and PySpacer's float64 truth.

Float32 rounding is the only reason two correct implementations of the
network differ, so features are judged against a float64 run of
PySpacer's own network on PySpacer's own patches. Per image, ours pass
when either

* max |ours - PySpacer| <= 1e-4 (the old rule), or
* max |ours - float64| <= 2 x max |PySpacer - float64| + 1e-5: ours are
  no farther from the truth than twice PySpacer's own float32 error.

Used by ``tests/extraction/test_fidelity.py`` and
``benchmarks/extraction.py``; :func:`float64_features` and
:func:`bilevel_image` by the float64-path tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

AGREEMENT = 1e-4
ERROR_FACTOR = 2.0
ERROR_SLACK = 1e-5

# Runs under PySpacer (tests.reference.run_reference): for each case,
# PySpacer's float32 features at ``rowcols`` (its extractor, as its task
# calls it) and a float64 run of its network on its own patches at
# ``exact_rowcols`` (default: the same points), saved as .npy files.
PYSPACER_FLOAT32_AND_FLOAT64 = '''
import numpy as np
import torch
from PIL import Image
from spacer.data_classes import DataLocation
from spacer.extractors.efficientnet import EfficientNetExtractor
from spacer.extractors.utils import crop_patches
from spacer.storage import load_image

extractor = EfficientNetExtractor(
    data_locations={'weights': DataLocation('filesystem', PAYLOAD['weights'])},
    data_hashes={'weights': PAYLOAD['sha256']})
with open(PAYLOAD['weights'], 'rb') as f:
    import io
    net = extractor.load_weights(io.BytesIO(f.read())).eval().double()


def exact_depthwise(conv):
    # PyTorch's float64 depthwise conv on CPU loops over channels (~20x
    # slower than float32): the same sum, spelled as k*k shifted products.
    assert conv.bias is None

    def forward(x):
        x = conv.static_padding(x)
        k, s = conv.weight.shape[-1], conv.stride[0]
        h, w = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        out = torch.zeros(x.shape[0], x.shape[1], h, w, dtype=x.dtype)
        for i in range(k):
            for j in range(k):
                out += (conv.weight[:, 0, i, j].view(1, -1, 1, 1)
                        * x[:, :, i:i + s * (h - 1) + 1:s,
                            j:j + s * (w - 1) + 1:s])
        return out
    return forward


for module in net.modules():
    if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
        module.forward = exact_depthwise(module)
for case in PAYLOAD['cases']:
    rowcols = [tuple(rc) for rc in case['rowcols']]
    if case.get('float32', True):
        features, _ = extractor(load_image(DataLocation('filesystem',
                                                        case['path'])),
                                rowcols)
        np.save(case['out'] + '.float32.npy',
                np.array([pf.data for pf in features.point_features],
                         dtype=np.float32))
    exact_rowcols = [tuple(rc) for rc in case.get('exact_rowcols', rowcols)]
    patches = crop_patches(load_image(DataLocation('filesystem',
                                                   case['path'])),
                           exact_rowcols, 224)
    exact = []
    with torch.no_grad():
        for start in range(0, len(patches), 10):
            batch = np.stack(patches[start:start + 10])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255
            exact.append(net.extract_features(x).numpy())
    np.save(case['out'] + '.float64.npy', np.concatenate(exact))
RESULT = 'ok'
'''


@dataclass(frozen=True)
class Verdict:
    vs_pyspacer: float    # max |ours - PySpacer|
    ours_error: float     # max |ours - float64|
    pyspacer_error: float  # max |PySpacer - float64|
    largest: float        # max |float64|

    @property
    def bound(self) -> float:
        return ERROR_FACTOR * self.pyspacer_error + ERROR_SLACK

    @property
    def ok(self) -> bool:
        return self.vs_pyspacer <= AGREEMENT or self.ours_error <= self.bound

    def row(self, name: str) -> str:
        rule = ('|ours-PySpacer| <= 1e-4' if self.vs_pyspacer <= AGREEMENT
                else 'err <= 2 x PySpacer err + 1e-5' if self.ok
                else 'FAILS')
        return (f'{name:<22}{self.largest:>9.2f}{self.vs_pyspacer:>12.2e}'
                f'{self.pyspacer_error:>12.2e}{self.ours_error:>12.2e}'
                f'{self.bound:>12.2e}  {rule}')


TABLE_HEADER = (f"{'image':<22}{'max|f64|':>9}{'|ours-PyS|':>12}"
                f"{'PyS err':>12}{'ours err':>12}{'bound':>12}  verdict")


def bilevel_image(seed: int = 11, size: int = 256) -> Any:
    """A black-and-white (mode '1') image: features reach thousands and
    float32 wanders ~10 from float64 there (runtime.exact)."""
    from PIL import Image

    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    texture = np.asarray(synthetic_texture(np.random.default_rng(seed), size))
    return Image.fromarray(texture[..., 1]).convert('1')


def float64_features(weights_path: Any, image: Any,
                     rowcols: Sequence[tuple[int, int]]) -> np.ndarray:
    """The truth in this process: the reference network (PySpacer's,
    unfolded) in float64 on the patches at ``rowcols``: PyTorch's, an
    oracle apart from our numpy one (skipped where torch is absent)."""
    import pytest
    torch = pytest.importorskip(
        'torch', reason="the float64 oracle is PyTorch's network (the 'gpu' "
                        "extra); this venv runs without torch")

    from spacer_worker.extractors.runtime.network import EfficientNetB0
    from spacer_worker.extractors.runtime.patches import crop_patch
    net = EfficientNetB0()
    net.load_state_dict(torch.load(weights_path, weights_only=True)['net'])
    patches = np.stack([crop_patch(image, r, c) for r, c in rowcols])
    with torch.inference_mode():
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).double() / 255
        return net.eval().double().features(x).numpy()


def judge(ours: np.ndarray, pyspacer: np.ndarray,
          exact: np.ndarray) -> Verdict:
    ours64 = ours.astype(np.float64)
    theirs64 = pyspacer.astype(np.float64)
    return Verdict(vs_pyspacer=float(np.abs(ours64 - theirs64).max()),
                   ours_error=float(np.abs(ours64 - exact).max()),
                   pyspacer_error=float(np.abs(theirs64 - exact).max()),
                   largest=float(np.abs(exact).max()))
