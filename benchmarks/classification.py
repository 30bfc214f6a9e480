#!/usr/bin/env python3
"""Classification: spacer_worker against PySpacer 0.14.0, same run, same files.

classify_features on one 200-point feature file with an MLP classifier
trained by PySpacer (20 classes, 1280 dims), warm: each side in its own
fresh process classifies once (imports, first allocations, our classifier
cache), then ``--repeats`` times; the median of those is the side's time.
The sides alternate for ``--rounds`` rounds (the machine may be shared) and
each keeps its best round. Scores must agree to 1e-12.

classify_image (extraction + scoring) of one 1200x900 JPEG at
``--image-points`` points, warm, ours with the classifier cache on and off
(CLASSIFIER_CACHE_SIZE=0) and PySpacer's.

    python3 benchmarks/classification.py
    python3 benchmarks/classification.py --rounds 2 --repeats 10

PySpacer's python comes from tests/reference.py (SPACER_REFERENCE_PYTHON or
~/.cache/spacer_worker/pyspacer-0.14.0; scripts/reference-venv.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from training import (  # noqa: E402
    CLASSIFY_CHILD,
    CLASSIFY_SIDES,
    TRAIN_CHILD,
    make_dataset,
    run_child,
    train_message,
)

from tests.reference import reference_python  # noqa: E402

CLASSIFY_IMAGE_CHILD = '''
import json, statistics, sys, time
from {pkg}.data_classes import DataLocation
from {pkg}.extractors.efficientnet import EfficientNetExtractor
from {pkg}.messages import ClassifyImageMsg
from {pkg}.tasks import classify_image
data = json.loads(sys.argv[1])
msg = ClassifyImageMsg(
    job_token='bench', extractor=EfficientNetExtractor(
        data_locations={{'weights': DataLocation('filesystem', data['weights'])}},
        data_hashes={{'weights': data['sha256']}}),
    rowcols=[tuple(rc) for rc in data['rowcols']],
    image_loc=DataLocation('filesystem', data['image']),
    classifier_loc=DataLocation('filesystem', data['model']))
classify_image(msg)  # warm up: network, classifier cache
times = []
for _ in range(int(data['repeats'])):
    t0 = time.perf_counter()
    classify_image(msg)
    times.append(time.perf_counter() - t0)
print('@@' + json.dumps(dict(seconds=min(times))))
'''


def best(previous: dict | None, run: dict) -> dict:
    return run if previous is None or run['seconds'] < previous['seconds'] \
        else previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--points', type=int, default=200)
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--image-points', type=int, default=20,
                        help='points of the classify_image run; 0 skips it')
    args = parser.parse_args()
    if reference_python() is None:
        raise SystemExit('PySpacer reference venv missing: run '
                         'scripts/reference-venv.sh')
    os.environ.setdefault('SPACER_SECRETS_PATH', '/nonexistent/secrets.json')
    from spacer_worker.task_utils import preprocess_labels

    work = Path(tempfile.mkdtemp(prefix='spacer-classify-bench-'))
    print(f'# load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs')
    try:
        labels = make_dataset(work, 40, args.points, 1280, args.classes)
        split = preprocess_labels(labels)
        msg = train_message(split, work, 'pyspacer-MLP', 'MLP', 3)
        run_child('pyspacer', TRAIN_CHILD, str(msg))
        model = str(work / 'pyspacer-MLP.pkl')
        feature = str(next(iter(split.val.keys())).key)

        results: dict = {}
        for _ in range(args.rounds):
            for name, side, env in CLASSIFY_SIDES:
                run = run_child(side, CLASSIFY_CHILD, feature, model,
                                str(args.repeats), env_extra=env)
                results[name] = best(results.get(name), run)
        import numpy as np
        same = np.allclose(results['ours']['scores'],
                           results['pyspacer']['scores'], atol=1e-12, rtol=0)
        print(f'\n## classify_features, {args.points} points, {args.classes} '
              f'classes (best of {args.rounds} rounds of the median of '
              f'{args.repeats} warm calls)')
        for name in ('pyspacer', 'ours', 'ours, no cache'):
            print(f'{name:<18}{results[name]["seconds"] * 1000:>9.2f} ms')
        ratio = results['pyspacer']['seconds'] / results['ours']['seconds']
        print(f'speed-up warm {ratio:.1f}x (goal >= 20x) '
              f'{"ok" if ratio >= 20 else "MISSED"}; without the classifier '
              f'cache {results["pyspacer"]["seconds"] / results["ours, no cache"]["seconds"]:.1f}x;'
              f' scores equal to 1e-12: {same}')

        if args.image_points:
            image_results = classify_images(work, model, args)
            print(f'\n## classify_image, 1200x900 JPEG, {args.image_points} '
                  f'points (best warm call)')
            for name, r in image_results.items():
                print(f'{name:<18}{r["seconds"]:>9.3f} s')
            print(f'speed-up warm '
                  f'{image_results["pyspacer"]["seconds"] / image_results["ours"]["seconds"]:.1f}x')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'# load average at the end {os.getloadavg()[0]:.2f}')


def classify_images(work: Path, model: str, args) -> dict:
    import numpy as np
    from PIL import Image

    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
        synthetic_texture,
    )
    rng = np.random.default_rng(3)
    image = work / 'photo.jpg'
    synthetic_texture(rng, 512).resize((1200, 900)).save(image, quality=90)
    weights = work / 'weights.pt'
    sha = make_calibrated_weights(weights, images=[Image.open(image)])
    data = {'weights': str(weights), 'sha256': sha, 'image': str(image),
            'model': model, 'repeats': 2,
            'rowcols': [[int(r), int(c)] for r, c in zip(
                rng.integers(0, 900, args.image_points),
                rng.integers(0, 1200, args.image_points), strict=True)]}
    results: dict = {}
    for _ in range(max(1, args.rounds - 1)):
        for name, side, env in CLASSIFY_SIDES:
            t0 = time.perf_counter()
            run = run_child(side, CLASSIFY_IMAGE_CHILD, json.dumps(data),
                            env_extra=env)
            run['wall'] = time.perf_counter() - t0
            results[name] = best(results.get(name), run)
    return results


if __name__ == '__main__':
    main()
