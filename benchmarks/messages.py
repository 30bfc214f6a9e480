"""Message (de)serialization speed: ours against PySpacer 0.14.0, same run.

    python3 benchmarks/messages.py [n_images] [labels_per_image]

Times serialize() and deserialize() of a TrainClassifierMsg carrying
``n_images * labels_per_image`` annotations in each of train/ref/val, and of
a ClassifyReturnMsg with 1000 points x 50 classes; prints both timings and
the ratio ours / PySpacer (below 1 means we are faster). Best of 5 runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reference import run_reference  # noqa: E402

BUILD = '''
def build(M, D, n_images, per_image):
    Loc = D.DataLocation
    labels = D.ImageLabels({
        Loc('s3', f'features/{i}.featurevector', 'bucket'):
            [(r, r + 1, r % 40) for r in range(per_image)]
        for i in range(n_images)})
    train = M.TrainClassifierMsg(
        job_token='bench', trainer='minibatch', nbr_epochs=10, clf_type='MLP',
        labels=M.TrainingTaskLabels(train=labels, ref=labels, val=labels),
        previous_model_locs=[], model_loc=Loc('memory', 'm'),
        valresult_loc=Loc('memory', 'v'))
    scores = M.ClassifyReturnMsg(
        runtime=1.0, scores=[(i, i, [1 / 50] * 50) for i in range(1000)],
        classes=list(range(50)), valid_rowcol=True)
    return {'TrainClassifierMsg': train, 'ClassifyReturnMsg': scores}


def timings(M, D, n_images, per_image, best_of=5):
    import json, time
    out = {}
    for name, msg in build(M, D, n_images, per_image).items():
        cls = getattr(M, name)
        data = json.loads(json.dumps(msg.serialize()))
        ser, de = [], []
        for _ in range(best_of):
            t = time.perf_counter(); msg.serialize()
            ser.append(time.perf_counter() - t)
            t = time.perf_counter(); cls.deserialize(data)
            de.append(time.perf_counter() - t)
        out[name] = {'serialize': min(ser), 'deserialize': min(de)}
    return out
'''


def main() -> None:
    n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    per_image = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    ns: dict = {}
    exec(BUILD, ns)
    from spacer_worker import data_classes, messages
    ours = ns['timings'](messages, data_classes, n_images, per_image)
    theirs = run_reference(
        BUILD + '''
from spacer import data_classes as D, messages as M
RESULT = timings(M, D, *PAYLOAD)
''', [n_images, per_image])
    print(f'{n_images} images x {per_image} labels per set '
          f'({3 * n_images * per_image} annotations); best of 5')
    print(f'{"message":26} {"op":12} {"ours s":>9} {"pyspacer s":>11} '
          f'{"ratio":>6}')
    for name in ours:
        for op in ('serialize', 'deserialize'):
            a, b = ours[name][op], theirs[name][op]
            print(f'{name:26} {op:12} {a:9.4f} {b:11.4f} {a / b:6.2f}')


if __name__ == '__main__':
    main()
