"""Loading a classifier pickle: restricted loader vs plain pickle vs PySpacer.

A real PySpacer-shaped classifier: CalibratedClassifierCV(cv='prefit') of
an MLPClassifier (hidden layers 200, 100 as PySpacer uses for large
sources; float64 weights; Adam state) on 1280-dim features, 60 classes,
pickled with protocol 2 by PySpacer 0.14.0's own ``store_classifier``.
Measured in one run, median of repeats:

* ``ours``: ``spacer_worker.storage.classifiers.parse_classifier`` (the
  restricted pure-Python unpickler, graph check and upgrades);
* ``plain``: ``pickle.loads`` (C unpickler; no protection);
* ``pyspacer``: PySpacer's ``load_classifier`` on the same file, in the
  reference venv (C unpickler + module renames);
* ``subprocess``: the alternative design, plain pickle in a fresh
  ``python`` that imports scikit-learn and hands the classifier back
  pickled (its parent would still have to unpickle that answer).

Also the peak of Python allocations during a load (tracemalloc).

    python3 benchmarks/classifier_load.py            # ~1 minute
    python3 benchmarks/classifier_load.py --repeats 5
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reference import reference_python, run_reference  # noqa: E402

DIM, CLASSES, HIDDEN = 1280, 60, (200, 100)

_PYSPACER = '''
import pickle, statistics, time
from spacer.data_classes import DataLocation
from spacer.storage import load_classifier, store_classifier
with open(PAYLOAD['ours'], 'rb') as f:
    clf = pickle.load(f)
loc = DataLocation('filesystem', PAYLOAD['path'])
store_classifier(loc, clf)
times = []
for _ in range(PAYLOAD['repeats']):
    load_classifier.cache_clear()  # PySpacer keeps the last 3 loaded
    start = time.perf_counter()
    load_classifier(loc)
    times.append(time.perf_counter() - start)
RESULT = statistics.median(times)
'''

_SUBPROCESS = (
    'import pickle, sys\n'
    'import sklearn.calibration, sklearn.neural_network\n'
    'clf = pickle.loads(sys.stdin.buffer.read())\n'
    'sys.stdout.buffer.write(pickle.dumps(clf, protocol=5))\n')


def make_classifier():
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    y = np.arange(3000) % CLASSES
    x = rng.normal(size=(3000, DIM)) * 0.1 + np.eye(CLASSES, DIM)[y]
    mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(2):
            mlp.partial_fit(x, y, classes=np.arange(CLASSES))
        return CalibratedClassifierCV(mlp, cv='prefit').fit(x, y)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()

    import numpy as np

    from spacer_worker.storage.classifiers import parse_classifier

    with tempfile.TemporaryDirectory() as tmp:
        clf = make_classifier()
        ours_path = Path(tmp) / 'made-here.pkl'
        ours_path.write_bytes(pickle.dumps(clf, protocol=2))
        path = Path(tmp) / 'pyspacer.pkl'
        pyspacer = None
        if reference_python() is not None:
            pyspacer = run_reference(_PYSPACER, {
                'ours': str(ours_path), 'path': str(path),
                'repeats': args.repeats})
        else:
            path.write_bytes(ours_path.read_bytes())
            print('PySpacer reference venv missing '
                  '(scripts/reference-venv.sh): its column is skipped.')
        data = path.read_bytes()

        loaded = parse_classifier(data)
        x = np.random.default_rng(1).normal(size=(200, DIM))
        assert np.array_equal(loaded.predict_proba(x), clf.predict_proba(x))

        ours = median_time(lambda: parse_classifier(data), args.repeats)
        plain = median_time(lambda: pickle.loads(data), args.repeats)
        sub = median_time(lambda: pickle.loads(subprocess.run(
            [sys.executable, '-c', _SUBPROCESS], input=data,
            capture_output=True, check=True).stdout), max(3, args.repeats // 3))
        ours_peak = peak_bytes(lambda: parse_classifier(data))
        plain_peak = peak_bytes(lambda: pickle.loads(data))

    print(f'classifier: MLP {HIDDEN} on {DIM}-dim features, {CLASSES} '
          f'classes, {len(data) / 1e6:.1f} MB pickle (protocol 2, written '
          f'by {"PySpacer 0.14.0" if pyspacer is not None else "us"}); '
          f'median of {args.repeats}')
    print(f'  ours (restricted)   {ours * 1e3:8.1f} ms')
    print(f'  plain pickle.loads  {plain * 1e3:8.1f} ms   ours / plain = '
          f'{ours / plain:.1f}x')
    if pyspacer is not None:
        print(f'  PySpacer load       {pyspacer * 1e3:8.1f} ms   ours / '
              f'PySpacer = {ours / pyspacer:.1f}x')
    print(f'  subprocess + plain  {sub * 1e3:8.1f} ms   subprocess / ours = '
          f'{sub / ours:.1f}x')
    print(f'  peak Python allocations: ours {ours_peak / 1e6:.1f} MB, plain '
          f'{plain_peak / 1e6:.1f} MB ({ours_peak / plain_peak:.2f}x)')


if __name__ == '__main__':
    main()
