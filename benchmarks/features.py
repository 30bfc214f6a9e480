"""Feature file size and store/load time: PySpacer 0.14.0 vs spacer_worker,
measured in the same run (timings on a shared machine are noisy; compare the
ratios). Run: python3 benchmarks/features.py [npoints] [dim]"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spacer_worker.data_classes import DataLocation, ImageFeatures  # noqa: E402
from tests.reference import run_reference  # noqa: E402

PYSPACER = '''
import time, numpy as np
from spacer.data_classes import DataLocation, ImageFeatures, PointFeatures
feat = np.load(PAYLOAD['src'])
loc = DataLocation('filesystem', PAYLOAD['dst'])
f = ImageFeatures([PointFeatures(i, i, v) for i, v in enumerate(feat)],
                  True, feat.shape[1], len(feat))
t = time.perf_counter(); f.store(loc); store = time.perf_counter() - t
t = time.perf_counter(); ImageFeatures.load(loc); load = time.perf_counter() - t
RESULT = {'store': store, 'load': load}
'''


def main(npoints: int = 1000, dim: int = 1280) -> None:
    rng = np.random.default_rng(0)
    # Network-like features: float32, non-negative, of order 0.1-1.
    feat = np.abs(rng.standard_normal((npoints, dim))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'feat.npy')
        np.save(src, feat)
        theirs = os.path.join(tmp, 'pyspacer.npz')
        ref = run_reference(PYSPACER, {'src': src, 'dst': theirs})
        ours = DataLocation('filesystem', os.path.join(tmp, 'ours.npz'))
        features = ImageFeatures.from_arrays(range(npoints), range(npoints),
                                             feat)
        t = time.perf_counter()
        features.store(ours)
        store = time.perf_counter() - t
        t = time.perf_counter()
        ImageFeatures.load(ours)
        load = time.perf_counter() - t
        size_theirs = os.path.getsize(theirs)
        size_ours = os.path.getsize(ours.key)
    print(f'{npoints} points x {dim} dims')
    print(f'file size: PySpacer {size_theirs / 1e6:.2f} MB, ours '
          f'{size_ours / 1e6:.2f} MB (ratio {size_ours / size_theirs:.2f})')
    print(f"store: PySpacer {ref['store'] * 1e3:.0f} ms, ours "
          f"{store * 1e3:.0f} ms (speed-up {ref['store'] / store:.1f}x)")
    print(f"load: PySpacer {ref['load'] * 1e3:.0f} ms, ours "
          f"{load * 1e3:.0f} ms (speed-up {ref['load'] / load:.1f}x)")


if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[1:3]))
