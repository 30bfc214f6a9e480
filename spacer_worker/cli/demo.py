"""``spacer-worker demo``: the whole pipeline on generated data.

1. Generates a small, realistic data set: images made of regions of four
   textured "substrates", points annotated with the substrate under them,
   and EfficientNet-b0 weights whose BatchNorm statistics are calibrated on
   these images (random weights alone give features near 1e-13).
2. Through the queues: extracts features for every image (``extract``),
   trains an MLP on most images (``train``), classifies the held-out
   images (``classify``), and scores them against their annotations.

With SPACER_BROKER_URL set, it talks to that broker and the workers you
started (they must see the output folder); otherwise it runs an embedded
broker and one worker per queue in this process. Same task code, queues
and JSON round trip either way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from spacer_worker import config
from spacer_worker.celery import app
from spacer_worker.celery import queue_name as queue_of
from spacer_worker.celery.health import check
from spacer_worker.client.jobs import Client, decode_result, raise_for_status
from spacer_worker.data_classes import DataLocation, ImageLabels, ValResults
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime.calibration import make_calibrated_weights
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    ExtractFeaturesMsg,
    TrainClassifierMsg,
)
from spacer_worker.report import build_report, report_folder_for, write_report_dir
from spacer_worker.storage import store_image
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.train_classifier import MiniBatchTrainer
from spacer_worker.worker.embedded import configure_embedded, embedded_workers

# Substrates: label id, name, base colour, texture.
CLASSES: list[tuple[int, str, tuple[int, int, int], str]] = [
    (1, 'sand', (200, 185, 150), 'grain'),
    (2, 'coral', (170, 95, 90), 'blobs'),
    (3, 'algae', (70, 130, 60), 'stripes'),
    (4, 'rock', (110, 110, 115), 'cracks'),
]
IMAGE_SIZE = (960, 720)  # width, height
BORDER = 60  # annotated points keep this many pixels from a region border


@dataclass
class DemoReport:
    mode: str = ''
    accuracy: float = 0.0
    chance: float = 0.0
    points_scored: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: str = ''
    report_path: str = ''
    ok: bool = False


def _say(text: str = '') -> None:
    print(text, flush=True)


# --- data ----------------------------------------------------------------------

def _noise(rng: Any, cells: int, size: tuple[int, int]) -> Any:
    """Smooth noise in [0, 1] with about ``cells`` blobs across."""
    width, height = size
    grid = rng.random((max(2, cells * height // width), cells),
                      dtype=np.float32)
    return np.asarray(Image.fromarray(grid, 'F').resize(size, Image.BICUBIC))


def _texture(rng: Any, colour: tuple[int, int, int], kind: str,
             size: tuple[int, int]) -> Any:
    """An RGB float image of one substrate's texture."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 'grain':
        pattern = 0.6 * rng.random((height, width), dtype=np.float32) + \
            0.4 * _noise(rng, 40, size)
    elif kind == 'blobs':
        pattern = _noise(rng, 12, size) ** 2 * 1.5
    elif kind == 'stripes':
        angle = rng.uniform(0.6, 1.0)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(7, 10)
        pattern = 0.5 + 0.5 * np.sin(phase) + 0.3 * _noise(rng, 25, size)
    else:
        edges = np.abs(_noise(rng, 10, size) - 0.5) < 0.04
        pattern = 0.7 + 0.2 * _noise(rng, 30, size) - 0.6 * edges
    brightness = rng.uniform(0.85, 1.15)
    rgb = np.asarray(colour, np.float32) * brightness
    return np.clip(pattern[..., None] * rgb * 1.1, 0, 255)


def make_image(rng: Any, regions: int = 4) -> tuple[Any, Any, Any]:
    """(PIL image, class index per pixel, distance to the nearest other
    region per pixel): Voronoi regions of substrates, each present."""
    width, height = IMAGE_SIZE
    seeds = rng.random((regions, 2)) * (height, width)
    classes = np.concatenate([rng.permutation(len(CLASSES)),
                              rng.integers(len(CLASSES),
                                           size=regions - len(CLASSES))])
    yy, xx = np.mgrid[0:height, 0:width]
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + \
        (xx[None] - seeds[:, 1, None, None]) ** 2
    class_map = classes[np.argmin(dist, axis=0)]
    nearest = np.sqrt(np.sort(dist, axis=0)[:2])
    margin = nearest[1] - nearest[0]
    image = np.zeros((height, width, 3), np.float32)
    for index, (_, _, colour, kind) in enumerate(CLASSES):
        mask = class_map == index
        if mask.any():
            image[mask] = _texture(rng, colour, kind, IMAGE_SIZE)[mask]
    return Image.fromarray(image.astype(np.uint8)), class_map, margin


@dataclass
class DemoData:
    image_locs: list[Any]
    feature_locs: list[Any]
    annotations: list[list[tuple[int, int, int]]]
    extractor: Any
    model_loc: Any
    valresult_loc: Any
    trained: Any = None     # the TrainClassifierReturnMsg, once trained


def make_data(out: Path, images: int, points: int, seed: int,
              progress: Callable[[int], None] | None = None,
              before_weights: Callable[[], None] | None = None) -> DemoData:
    """Write images, weights and annotations under ``out``;
    ``progress(1)`` after each image, ``before_weights()`` once they are
    all written."""

    rng = np.random.default_rng(seed)
    for sub in ('images', 'features', 'model'):
        (out / sub).mkdir(parents=True, exist_ok=True)
    width, height = IMAGE_SIZE
    pil_images, image_locs, feature_locs, annotations = [], [], [], []
    for i in range(images):
        image, class_map, margin = make_image(rng)
        loc = DataLocation('filesystem', str(out / 'images' / f'img{i:03d}.jpg'))
        store_image(loc, image)
        # Annotators click inside a substrate, not on a border between two.
        inside = np.argwhere(margin > BORDER)
        inside = inside[(inside[:, 0] >= 16) & (inside[:, 0] < height - 16) &
                        (inside[:, 1] >= 16) & (inside[:, 1] < width - 16)]
        rows, cols = inside[rng.choice(len(inside), size=points,
                                       replace=False)].T
        annotations.append([(int(r), int(c), CLASSES[class_map[r, c]][0])
                            for r, c in zip(rows, cols, strict=True)])
        pil_images.append(image)
        image_locs.append(loc)
        feature_locs.append(DataLocation(
            'filesystem', str(out / 'features' / f'img{i:03d}.featurevector')))
        if progress is not None:
            progress(1)
    if before_weights is not None:
        before_weights()
    weights = out / 'model' / 'efficientnet_b0_calibrated.pt'
    sha256 = make_calibrated_weights(weights, images=pil_images, seed=seed)
    extractor = EfficientNetExtractor(
        data_locations={'weights': DataLocation('filesystem', str(weights))},
        data_hashes={'weights': sha256})
    return DemoData(
        image_locs=image_locs, feature_locs=feature_locs,
        annotations=annotations, extractor=extractor,
        model_loc=DataLocation('filesystem', str(out / 'model' /
                                                 'classifier.pkl')),
        valresult_loc=DataLocation('filesystem', str(out / 'model' /
                                                     'valresult.json')))


# --- running through the queues -------------------------------------------------

def _bar(total: int, desc: str, unit: str) -> Any:
    return tqdm(total=total, desc=f'{desc:<9}', unit=unit, file=sys.stdout,
                dynamic_ncols=True, leave=True)


def wait_all(client: Any, handles: Sequence[Any], desc: str, unit: str,
             timeout: float) -> list[Any]:
    """Wait for every handle with one bar; return their typed results."""
    results: list[Any] = [None] * len(handles)
    pending = set(range(len(handles)))
    deadline = time.monotonic() + timeout
    with _bar(len(handles), desc, unit) as bar:
        while pending:
            order = sorted(pending)
            for index, status in zip(
                    order, client.statuses([handles[i] for i in order]),
                    strict=True):
                if status.finished:
                    raise_for_status(status, handles[index])
                    results[index] = decode_result(handles[index].task,
                                                   status.result)
                    pending.discard(index)
                    bar.update(1)
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f'{len(pending)} {desc} task(s) not done after '
                        f'{timeout:.0f} s: are workers consuming queue '
                        f'{handles[min(pending)].queue!r}? '
                        f'(spacer-worker check)')
                time.sleep(0.05)
    return results


def wait_training(client: Any, handle: Any, epochs: int,
                  timeout: float) -> Any:
    """Wait for a training task with an epoch bar fed by its progress."""
    deadline = time.monotonic() + timeout
    with _bar(epochs, 'train', 'epoch') as bar:
        while True:
            status = client.status(handle)
            info = status.progress or {}
            epoch = info.get('epoch', info.get('done'))
            if isinstance(epoch, int) and epoch > bar.n:
                bar.update(epoch - bar.n)
            ref_acc = info.get('ref_acc', info.get('acc'))
            if isinstance(ref_acc, (int, float)):
                bar.set_postfix(ref_acc=f'{ref_acc:.3f}')
            if status.finished:
                raise_for_status(status, handle)
                if bar.n < epochs:
                    bar.update(epochs - bar.n)
                return decode_result(handle.task, status.result)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'Training not done after {timeout:.0f} s: is a worker '
                    f'consuming queue {handle.queue!r}? (spacer-worker check)')
            time.sleep(0.1)


def split_images(count: int) -> tuple[list[int], list[int]]:
    """(training images, held-out images): every fifth image is held out."""
    held = [i for i in range(count) if i % 5 == 4] or [count - 1]
    return [i for i in range(count) if i not in held], held


def run_pipeline(client: Any, data: DemoData, epochs: int,
                 timings: dict[str, float], timeout: float = 600.0
                 ) -> tuple[int, int]:
    """Extract, train, classify through the queues; (correct, scored)."""
    started = time.perf_counter()
    handles = [client.submit(ExtractFeaturesMsg(
        job_token=f'extract-{i}', extractor=data.extractor,
        rowcols=[(r, c) for r, c, _ in data.annotations[i]],
        image_loc=data.image_locs[i], feature_loc=data.feature_locs[i]))
        for i in range(len(data.image_locs))]
    wait_all(client, handles, 'extract', 'img', timeout)
    timings['extract'] = time.perf_counter() - started

    started = time.perf_counter()
    train_ids, held_ids = split_images(len(data.image_locs))
    labels = preprocess_labels(
        ImageLabels({data.feature_locs[i]: data.annotations[i]
                     for i in train_ids}),
        split_ratios=(0.15, 0.15), split_mode=SplitMode.POINTS_STRATIFIED)
    train_handle = client.submit(TrainClassifierMsg(
        job_token='train', trainer=MiniBatchTrainer(), nbr_epochs=epochs,
        clf_type='MLP', labels=labels, previous_model_locs=[],
        model_loc=data.model_loc, valresult_loc=data.valresult_loc))
    trained = wait_training(client, train_handle, epochs, timeout)
    timings['train'] = time.perf_counter() - started

    started = time.perf_counter()
    handles = [client.submit(ClassifyFeaturesMsg(
        job_token=f'classify-{i}', feature_loc=data.feature_locs[i],
        classifier_loc=data.model_loc)) for i in held_ids]
    results = wait_all(client, handles, 'classify', 'img', timeout)
    timings['classify'] = time.perf_counter() - started

    correct = scored = 0
    for i, result in zip(held_ids, results, strict=True):
        truth = {(r, c): label for r, c, label in data.annotations[i]}
        for row, col, scores in result.scores:
            best = max(range(len(scores)), key=scores.__getitem__)
            correct += int(result.classes[best] == truth[(row, col)])
            scored += 1
    data.trained = trained
    return correct, scored


def write_training_report(data: DemoData) -> Path:
    """The training report of the demo's classifier, with the substrates'
    names; returns its index.html."""
    # Kept beside valresult.json, so that `spacer-worker report` can redraw
    # it: the return message is the only place ref_accs and pc_accs live.
    folder = Path(data.valresult_loc.key).parent
    (folder / 'trainresult.json').write_text(
        json.dumps(data.trained.serialize(), indent=1))
    report = build_report(
        ValResults.load(data.valresult_loc),
        names={str(label): name for label, name, _, _ in CLASSES},
        train_result=data.trained, title='spacer-worker demo: training report')
    return write_report_dir(report, report_folder_for(data.model_loc).key)


# --- modes -----------------------------------------------------------------------

def choose_mode(mode: str) -> str:
    if mode != 'auto':
        return mode
    _, source = config.lookup('BROKER_URL')
    return 'embedded' if source == 'default' else 'broker'


@contextmanager
def _write_root(directory: Path) -> Iterator[None]:
    """FILESYSTEM_WRITE_ROOTS extended by ``directory`` for the block."""
    name = 'SPACER_FILESYSTEM_WRITE_ROOTS'
    before = os.environ.get(name)
    os.environ[name] = ':'.join(filter(None, [before, str(directory)]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_demo(out_dir: str | os.PathLike | None = None, images: int = 10,
             points: int = 40, epochs: int = 50, mode: str = 'auto',
             seed: int = 0, timeout: float = 600.0) -> DemoReport:
    """Run the demo, printing as it goes; return what it measured."""
    if images < 3 or points < 5 or epochs < 1:
        raise ValueError(f'demo needs at least 3 images, 5 points per image '
                         f'and 1 epoch; got {images}, {points}, {epochs}.')
    report = DemoReport(mode=choose_mode(mode))
    out = Path(out_dir or 'spacer-demo').resolve()
    report.out_dir = str(out)
    queues = [queue_of(kind) for kind in ('extract', 'train', 'classify')]

    with ExitStack() as stack:
        if report.mode == 'embedded':
            configure_embedded(app)
            # The demo is the operator of its in-process worker: it lets the
            # worker's sandbox write (and read) the demo's folder only.
            stack.enter_context(_write_root(out))
            _say('mode: embedded (no SPACER_BROKER_URL): in-memory broker and '
                 'result backend, a worker in this process consuming '
                 f"{', '.join(queues)} with one thread per queue; it may "
                 f"read and write {out} only")
        else:
            broker = config.redact('BROKER_URL', config.broker_url())
            ok, lines = check(queues=queues, timeout=5.0, app=app)
            if not ok:
                raise RuntimeError(
                    f'{lines[-1]} Start workers for queues '
                    f"{', '.join(queues)} (spacer-worker worker -Q "
                    f"{','.join(queues)}), or unset SPACER_BROKER_URL for the "
                    f'embedded mode.')
            _say(f'mode: broker {broker} with running workers ({lines[1]}); '
                 f'they must be able to read and write {out} (start them '
                 f'with SPACER_FILESYSTEM_WRITE_ROOTS={out})')

        started = time.perf_counter()
        with ExitStack() as bar_scope:
            bar = bar_scope.enter_context(_bar(images, 'generate', 'img'))

            def announce_weights() -> None:
                bar_scope.close()
                _say('calibrating EfficientNet-b0 weights (BatchNorm '
                     'statistics) on the images...')
            data = make_data(out, images, points, seed, progress=bar.update,
                             before_weights=announce_weights)
        report.timings['generate'] = time.perf_counter() - started

        if report.mode == 'embedded':
            started = time.perf_counter()
            stack.enter_context(embedded_workers(app, queues))
            report.timings['workers'] = time.perf_counter() - started

        client = Client(app)
        correct, scored = run_pipeline(client, data, epochs, report.timings,
                                       timeout)

    val_acc = data.trained.acc
    started = time.perf_counter()
    report.report_path = str(write_training_report(data))
    report.timings['report'] = time.perf_counter() - started
    report.points_scored = scored
    report.accuracy = correct / scored if scored else 0.0
    _, held = split_images(images)
    counts: dict[int, int] = {}
    for i in held:
        for _, _, label in data.annotations[i]:
            counts[label] = counts.get(label, 0) + 1
    report.chance = max(counts.values()) / sum(counts.values())
    report.ok = report.accuracy >= min(0.95, report.chance + 0.25)

    _say()
    _say(f'accuracy on {len(held)} held-out images: {report.accuracy:.1%} '
         f'of {scored} points (majority-class guess: {report.chance:.1%}; '
         f"the trainer's own validation accuracy: {val_acc:.1%})")
    _say('timings: ' + ', '.join(f'{stage} {seconds:.1f} s'
                                 for stage, seconds in report.timings.items()))
    _say(f'outputs in {out}: images/ (inputs), features/ (*.featurevector), '
         f'model/ (classifier.pkl, valresult.json, trainresult.json, '
         f'weights)')
    _say(f'training report (confusion matrix, accuracy per class, per '
         f'confidence threshold and per epoch): {report.report_path}')
    if not report.ok:
        _say('accuracy is not clearly above chance: something is wrong.')
    return report
