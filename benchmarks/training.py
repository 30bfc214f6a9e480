"""Training and classification: spacer_worker against PySpacer 0.14.0.

Both sides run in the same invocation, each measurement in its own fresh
process (so each peak RSS is that side's own), on the same feature files
(PySpacer's npz layout, written by spacer_worker's storage) and the same
TrainClassifierMsg JSON:

1. fidelity: validation accuracy of MLP and LR, same features and labels;
2. speed and memory: MLP, 300 images x 200 points x 1280 dims, 10 epochs,
   --rounds runs per side alternated (median time, highest peak RSS);
3. classify_features on one 200-point feature file (median of repeats);
4. scale: 1,000,000 synthetic points trained here (PySpacer not run:
   it would re-read every file every epoch), peak RSS and time.

Run (takes ~12 minutes on 2 cores; --skip-scale saves ~5):

    python3 benchmarks/training.py
    python3 benchmarks/training.py --quick      # small sizes, smoke test

PySpacer's python comes from tests/reference.py (SPACER_REFERENCE_PYTHON or
~/.cache/spacer_worker/pyspacer-0.14.0; scripts/reference-venv.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reference import reference_python  # noqa: E402

# --- synthetic data ---------------------------------------------------------

LATENT = 64


def _class_model(classes: int, dim: int, seed: int):
    import numpy as np
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, LATENT))
    projection = rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)
    # Imbalanced classes, as in coral surveys.
    weights = 1.0 / np.arange(1, classes + 1) ** 0.8
    return centers, projection, weights / weights.sum()


def _write_image(args: tuple) -> list:
    """Features of one image: a latent class point + image shift + noise,
    projected to ``dim`` non-negative values of order 0.1-1 (like
    EfficientNet's pooled activations). Returns the annotations."""
    import numpy as np

    from spacer_worker.data_classes import DataLocation, ImageFeatures

    path, index, points, dim, classes, seed = args
    centers, projection, weights = _class_model(classes, dim, seed)
    rng = np.random.default_rng([seed, index])
    labels = rng.choice(classes, size=points, p=weights)
    z = (centers[labels] + rng.normal(scale=1.0, size=LATENT)
         + rng.normal(scale=2.5, size=(points, LATENT)))
    feat = np.maximum(z @ projection, 0).astype(np.float32) * 0.5
    rows = (np.arange(points) // 20) * 50 + 10
    cols = (np.arange(points) % 20) * 50 + 10
    ImageFeatures.from_arrays(rows, cols, feat).store(DataLocation('filesystem', path))
    return [(int(r), int(c), int(label) + 1)
            for r, c, label in zip(rows, cols, labels, strict=True)]


def make_dataset(directory: Path, images: int, points: int, dim: int,
                 classes: int, seed: int = 0, workers: int = 2):
    """Write the feature files; return the labels (spacer_worker's)."""
    from spacer_worker.data_classes import DataLocation, ImageLabels

    directory.mkdir(parents=True, exist_ok=True)
    jobs = [(str(directory / f'img{i:05d}.npz'), i, points, dim, classes,
             seed) for i in range(images)]
    with ProcessPoolExecutor(workers) as pool:
        annotations = list(pool.map(_write_image, jobs, chunksize=16))
    return ImageLabels({DataLocation('filesystem', job[0]): anns
                        for job, anns in zip(jobs, annotations, strict=True)})


def train_message(split, directory: Path, name: str, clf_type: str,
                  epochs: int) -> Path:
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.messages import TrainClassifierMsg

    msg = TrainClassifierMsg(
        job_token=name, trainer='minibatch', nbr_epochs=epochs,
        clf_type=clf_type, labels=split, previous_model_locs=[],
        model_loc=DataLocation('filesystem', str(directory / f'{name}.pkl')),
        valresult_loc=DataLocation('filesystem',
                                   str(directory / f'{name}.json')))
    path = directory / f'{name}.msg.json'
    path.write_text(json.dumps(msg.serialize()))
    return path


# --- measured children --------------------------------------------------------

TRAIN_CHILD = '''
import json, resource, sys, time
# A worker has its libraries loaded before the first task: time the task.
import numpy, sklearn.calibration, sklearn.linear_model
import sklearn.model_selection, sklearn.neural_network
from {pkg}.messages import TrainClassifierMsg
from {pkg}.tasks import train_classifier
msg = TrainClassifierMsg.deserialize(json.load(open(sys.argv[1])))
t0 = time.perf_counter()
ret = train_classifier(msg)
seconds = time.perf_counter() - t0
print('@@' + json.dumps(dict(
    seconds=seconds, acc=ret.acc, ref_accs=ret.ref_accs,
    maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
'''

PROFILE_CHILD = '''
import cProfile, json, pstats, sys, time
import numpy, sklearn.calibration, sklearn.linear_model
import sklearn.model_selection, sklearn.neural_network
from {pkg}.messages import TrainClassifierMsg
from {pkg}.tasks import train_classifier
msg = TrainClassifierMsg.deserialize(json.load(open(sys.argv[1])))
profile = cProfile.Profile()
t0 = time.perf_counter()
profile.runcall(train_classifier, msg)
total = time.perf_counter() - t0
stats = pstats.Stats(profile).stats
def cumulative(suffix):
    return sum(v[3] for k, v in stats.items()
               if (k[0] + ':' + k[2]).endswith(suffix))
parts = {{
    'load features (open_training_data)': cumulative('loading.py:_fill'),
    'MLP steps (scikit-learn for the first chunk)': cumulative('mlp_steps.py:run_ordered')
        + cumulative('_multilayer_perceptron.py:partial_fit'),
    '  Adam updates': cumulative('mlp_steps.py:step')
                      + cumulative('adam.py:update_params')
                      + cumulative('_stochastic_optimizers.py:update_params'),
    '  waiting for the next chunk (prefetch)': cumulative('prefetch.py:next_epoch'),
    'reference accuracy per epoch': cumulative('mlp_steps.py:predict'),
    'calibration': cumulative('calibration.py:fit')
        + cumulative('calibration.py:calibrate_prefit'),
    'validation scoring': cumulative('evaluation.py:evaluate_set'),
    'store model + results': cumulative('classifiers.py:store_classifier'),
}}
print('@@' + json.dumps(dict(seconds=total, parts=parts)))
'''

CLASSIFY_CHILD = '''
import json, statistics, sys, time
from {pkg}.data_classes import DataLocation
from {pkg}.messages import ClassifyFeaturesMsg
from {pkg}.tasks import classify_features
msg = ClassifyFeaturesMsg(
    job_token='bench', feature_loc=DataLocation('filesystem', sys.argv[1]),
    classifier_loc=DataLocation('filesystem', sys.argv[2]))
ret = classify_features(msg)  # warm up: imports, first allocation
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter()
    ret = classify_features(msg)
    times.append(time.perf_counter() - t0)
print('@@' + json.dumps(dict(seconds=statistics.median(times),
                             scores=[s[2] for s in ret.serialize()['scores']])))
'''


# The classify runs: (name, side, extra environment). The classifier cache
# is what a warm worker has; with it off, every call unpickles the model.
CLASSIFY_SIDES = (('pyspacer', 'pyspacer', {}),
                  ('ours', 'ours', {}),
                  ('ours, no cache', 'ours',
                   {'SPACER_CLASSIFIER_CACHE_SIZE': '0'}))


def run_child(side: str, code: str, *args: str,
              env_extra: dict | None = None) -> dict:
    python = str(reference_python()) if side == 'pyspacer' else sys.executable
    pkg = 'spacer' if side == 'pyspacer' else 'spacer_worker'
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')
           or k == 'SPACER_SECRETS_PATH'}
    env.update(env_extra or {})
    proc = subprocess.run([python, '-c', code.format(pkg=pkg), *args],
                          capture_output=True, text=True, env=env,
                          cwd=str(ROOT) if side == 'ours' else '/')
    if proc.returncode != 0:
        raise SystemExit(f'{side} run failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.rsplit('@@', 1)[1])


# --- the benchmark -------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=300)
    parser.add_argument('--points', type=int, default=200)
    parser.add_argument('--dim', type=int, default=1280)
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--rounds', type=int, default=3,
                        help='MLP trainings per side, alternated; the '
                             'speed-up is of the medians (default 3)')
    parser.add_argument('--classify-repeats', type=int, default=20)
    parser.add_argument('--scale-points', type=int, default=1_000_000)
    parser.add_argument('--scale-epochs', type=int, default=2)
    parser.add_argument('--skip-scale', action='store_true')
    parser.add_argument('--profile', action='store_true',
                        help='also run our MLP training under cProfile and '
                             'print where its time goes')
    parser.add_argument('--quick', action='store_true',
                        help='small sizes, to check the script runs')
    parser.add_argument('--workdir', type=Path, default=None,
                        help='where data goes (default: a temp dir, removed)')
    args = parser.parse_args()
    if args.quick:
        args.images, args.points, args.dim, args.epochs = 30, 100, 256, 3
        args.scale_points, args.classify_repeats = 100_000, 5
        args.rounds = 1
    if reference_python() is None:
        raise SystemExit('PySpacer reference venv missing: run '
                         'scripts/reference-venv.sh')
    os.environ.setdefault('SPACER_SECRETS_PATH', '/nonexistent/secrets.json')

    from spacer_worker.task_utils import preprocess_labels

    work = args.workdir or Path(tempfile.mkdtemp(prefix='spacer-bench-'))
    print(f'# data in {work}; load average {os.getloadavg()[0]:.2f}, '
          f'{os.cpu_count()} CPUs')
    results: dict = {}
    try:
        t0 = time.perf_counter()
        labels = make_dataset(work / 'main', args.images, args.points,
                              args.dim, args.classes)
        split = preprocess_labels(labels)
        print(f'# {args.images} images x {args.points} points x {args.dim} '
              f'dims, {args.classes} classes; split '
              f'{split.train.label_count}/{split.ref.label_count}/'
              f'{split.val.label_count} train/ref/val '
              f'(written in {time.perf_counter() - t0:.0f} s)')

        print('\n## training (each run in its own process)')
        print(f'{"run":<22}{"seconds":>9}{"peak RSS MiB":>14}{"val acc":>9}')
        for clf_type in ('MLP', 'LR'):
            # The MLP, the timed target, runs --rounds times per side,
            # alternated (a noisy neighbour then slows both alike); the
            # ratio is of the medians.
            rounds = args.rounds if clf_type == 'MLP' else 1
            runs: dict[str, list[dict]] = {'pyspacer': [], 'ours': []}
            for round_ in range(rounds):
                for side in ('pyspacer', 'ours'):
                    msg = train_message(split, work / 'main',
                                        f'{side}-{clf_type}', clf_type,
                                        args.epochs)
                    r = run_child(side, TRAIN_CHILD, str(msg))
                    runs[side].append(r)
                    label = f'{side} {clf_type}' + \
                        (f' #{round_ + 1}' if rounds > 1 else '')
                    print(f'{label:<22}{r["seconds"]:>9.2f}'
                          f'{r["maxrss_mb"]:>14.0f}{r["acc"]:>9.4f}')
            for side, side_runs in runs.items():
                median = sorted(side_runs, key=lambda r: r['seconds'])[
                    (len(side_runs) - 1) // 2]
                results[f'{side}-{clf_type}'] = dict(
                    median, maxrss_mb=max(r['maxrss_mb'] for r in side_runs))
                if rounds > 1:
                    print(f'{side + " " + clf_type + " median":<22}'
                          f'{median["seconds"]:>9.2f}'
                          f'{results[side + "-" + clf_type]["maxrss_mb"]:>14.0f}'
                          f'{median["acc"]:>9.4f}')

        if args.profile:
            msg = work / 'main' / 'ours-MLP.msg.json'
            r = run_child('ours', PROFILE_CHILD, str(msg))
            print(f'\n## where our MLP training time goes (cProfile, '
                  f'{r["seconds"]:.2f} s in all, profiler overhead included)')
            for name, seconds in r['parts'].items():
                print(f'{name:<40}{seconds:>8.2f} s'
                      f'{seconds / r["seconds"] * 100:>6.0f}%')

        print('\n## classify_features, one file of '
              f'{args.points} points (median of {args.classify_repeats})')
        feature = str(next(iter(split.val.keys())).key)
        model = str(work / 'main' / 'pyspacer-MLP.pkl')
        for name, side, env in CLASSIFY_SIDES:
            r = run_child(side, CLASSIFY_CHILD, feature, model,
                          str(args.classify_repeats), env_extra=env)
            results[f'classify-{name}'] = r
            print(f'{name:<22}{r["seconds"] * 1000:>9.1f} ms')

        if not args.skip_scale:
            images = args.scale_points // 200
            t0 = time.perf_counter()
            shutil.rmtree(work / 'main')
            scale_labels = make_dataset(work / 'scale', images, 200,
                                        args.dim, args.classes, seed=1)
            scale_split = preprocess_labels(scale_labels)
            del scale_labels
            msg = train_message(scale_split, work / 'scale', 'scale-MLP',
                                'MLP', args.scale_epochs)
            del scale_split
            print(f'\n## scale: {images * 200} points ({images} images x '
                  f'200 x {args.dim}), MLP, {args.scale_epochs} epochs '
                  f'(data written in {time.perf_counter() - t0:.0f} s)')
            r = run_child('ours', TRAIN_CHILD, str(msg))
            results['scale'] = r
            print(f'{"ours MLP":<22}{r["seconds"]:>9.1f} s'
                  f'{r["maxrss_mb"]:>10.0f} MiB peak RSS; val acc '
                  f'{r["acc"]:.4f}')
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print('\n## ratios and targets')
    checks = []
    for clf_type in ('MLP', 'LR'):
        diff = abs(results[f'ours-{clf_type}']['acc']
                   - results[f'pyspacer-{clf_type}']['acc']) * 100
        checks.append((f'{clf_type} val accuracy difference', f'{diff:.2f} pp',
                       '<= 1 pp', diff <= 1))
    mlp_o, mlp_p = results['ours-MLP'], results['pyspacer-MLP']
    speed = mlp_p['seconds'] / mlp_o['seconds']
    checks.append(('MLP training speed-up', f'{speed:.1f}x', '>= 5x',
                   speed >= 5))
    rss = mlp_o['maxrss_mb'] / mlp_p['maxrss_mb']
    checks.append(('MLP peak RSS ours/PySpacer', f'{rss:.2f}', '<= 1.00',
                   rss <= 1))
    classify = (results['classify-pyspacer']['seconds']
                / results['classify-ours']['seconds'])
    checks.append(('classify_features speed-up', f'{classify:.1f}x',
                   '>= 20x', classify >= 20))
    cold = (results['classify-pyspacer']['seconds']
            / results['classify-ours, no cache']['seconds'])
    checks.append(('  same, model cache off', f'{cold:.1f}x', '(report)',
                   True))
    import numpy as np
    same = np.allclose(results['classify-ours']['scores'],
                       results['classify-pyspacer']['scores'], atol=1e-12)
    checks.append(('classify scores equal (1e-12)', str(same), 'True', same))
    if 'scale' in results:
        gib = results['scale']['maxrss_mb'] / 1024
        checks.append((f'scale peak RSS ({args.scale_points} points)',
                       f'{gib:.2f} GiB', '< 6 GiB', gib < 6))
        checks.append(('scale training time',
                       f'{results["scale"]["seconds"]:.0f} s', '(report)',
                       True))
    for name, value, target, ok in checks:
        print(f'{name:<36}{value:>12}  target {target:<10}'
              f'{"ok" if ok else "MISSED"}')
    print(f'# load average at the end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
