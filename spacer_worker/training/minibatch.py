"""PySpacer's mini-batch training, on features loaded once.

Per epoch, the training images are shuffled with numpy's legacy generator
seeded ``seed + epoch``, their rows are concatenated in that order and cut
into batches of ``batch_size`` for ``partial_fit``; the MLP draws its
initial weights and its in-batch shuffles from the same generator. With
seed 0 this is the sequence PySpacer 0.14 produces by reseeding numpy's
global generator each epoch; with TRAINING_PRECISION float64 both train
the very same classifier from the same data. The default, float32, takes
the same steps in single precision, about twice as fast, to the same
accuracy. Nothing touches numpy's global generator, and every run with
the same seed gives the same classifier.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from spacer_worker import config
from spacer_worker.constants import FeatureCache
from spacer_worker.data_classes import ValResults
from spacer_worker.data_classes.results import TrainClassifierReturnMsg
from spacer_worker.exceptions import MessageError
from spacer_worker.training import checkpoint
from spacer_worker.training.adam import restore, use_in_place_adam
from spacer_worker.training.calibration import calibrate_prefit
from spacer_worker.training.evaluation import (
    CHUNK_ROWS,
    accuracy,
    as_float64,
    evaluate_set,
    predict_labels,
)
from spacer_worker.training.loading import FeatureSet, open_training_data
from spacer_worker.training.matrix import DTYPE, training_precision
from spacer_worker.training.mlp_steps import MLPSteps, shuffled_order, supports
from spacer_worker.training.prefetch import OrderedChunks
from spacer_worker.training.threads import blas_threads

logger = logging.getLogger(__name__)

Progress = Callable[..., None]


def mlp_settings(trainer: Any, train_count: int) -> tuple[tuple[int, ...],
                                                           float]:
    """Hidden layer sizes and learning rate: PySpacer's choice by label
    count unless the trainer overrides them."""
    sizes = getattr(trainer, 'mlp_hidden_layer_sizes', None)
    rate = getattr(trainer, 'mlp_learning_rate_init', None)
    threshold = getattr(trainer, 'mlp_large_data_threshold', 50000)
    if sizes is not None:
        auto_rate = 1e-3
    elif train_count >= threshold:
        sizes, auto_rate = (200, 100), 1e-4
    else:
        sizes, auto_rate = (100,), 1e-3
    return tuple(int(s) for s in sizes), float(rate or auto_rate)


def make_classifier(trainer: Any, clf_type: str, train_count: int,
                    rng: np.random.RandomState) -> Any:
    if clf_type == 'MLP':
        sizes, rate = mlp_settings(trainer, train_count)
        return MLPClassifier(hidden_layer_sizes=sizes,
                             learning_rate_init=rate, random_state=rng)
    return SGDClassifier(
        loss=getattr(trainer, 'sgd_loss', 'log_loss'),
        average=getattr(trainer, 'sgd_average', True),
        random_state=getattr(trainer, 'sgd_random_state', 0))


def epoch_chunks(train: FeatureSet, order: np.ndarray,
                 batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """The row segments ``(start, count)`` of each batch of ``batch_size``
    rows (the last one shorter): the rows of the images in ``order``,
    concatenated."""
    segments: list[tuple[int, int]] = []
    filled = 0
    for start, count in zip(train.block_starts[order].tolist(),
                            train.block_counts[order].tolist(),
                            strict=True):
        while count:
            take = min(count, batch_size - filled)
            segments.append((start, take))
            start += take
            count -= take
            filled += take
            if filled == batch_size:
                yield segments
                segments, filled = [], 0
    if segments:
        yield segments


def _batch(train: FeatureSet, segments: list[tuple[int, int]],
           buffer: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    x = train.matrix.gather(segments, out=buffer)
    y = np.concatenate([train.labels[s - base:s - base + n]
                        for s, n in segments])
    return x, y


def epoch_order(generator: np.random.RandomState, seed: int, epoch: int,
                n_images: int) -> np.ndarray:
    """PySpacer's image order for ``epoch``: ``generator`` reseeded with
    ``seed + epoch``, then the images shuffled (the MLP's draws in that
    epoch come next from the same generator)."""
    generator.seed(seed + epoch)
    order = np.arange(n_images)
    generator.shuffle(order)
    return order


def check_inputs(clf_type: Any, nbr_epochs: Any) -> tuple[str, int]:
    clf_type = str(getattr(clf_type, 'value', clf_type))
    if clf_type not in config.CLASSIFIER_TYPES:
        raise MessageError(
            f"clf_type {clf_type!r} is not one of "
            f"{', '.join(config.CLASSIFIER_TYPES)}.")
    if isinstance(nbr_epochs, bool) or not isinstance(nbr_epochs, int) \
            or nbr_epochs < 1:
        raise MessageError(
            f"nbr_epochs {nbr_epochs!r} must be a positive integer.")
    return clf_type, nbr_epochs


def fit(trainer: Any, train: FeatureSet, ref: FeatureSet, nbr_epochs: int,
        clf_type: str, seed: int = 0, progress: Progress | None = None,
        precision: str = 'float64') -> tuple[Any, list[float]]:
    """Train on ``train`` for ``nbr_epochs``, calibrate on ``ref``; return
    (CalibratedClassifierCV, reference accuracy after each epoch).

    ``precision`` is the MLP's mini-batch arithmetic; SGD (LR) always runs
    in float64, where float32 would not be faster. Calibration and
    evaluation run in float64, as classification does; the reference
    accuracy after each epoch runs in the training's precision.
    """

    batch_size = int(getattr(trainer, 'batch_size', 5000))
    classes = np.unique(ref.labels)
    rng = np.random.RandomState(seed)
    clf = make_classifier(trainer, clf_type, train.nrows, rng)
    ref_x = ref.read_all()
    rows = min(batch_size, train.nrows)
    compute = np.float32 if clf_type == 'MLP' and precision == 'float32' \
        else np.float64
    buffer32: np.ndarray | None = np.empty((rows, train.matrix.dim),
                                            dtype=DTYPE)
    buffer64 = np.empty((rows, train.matrix.dim), dtype=np.float64) \
        if compute is np.float64 else None
    n_images = len(train.block_starts)
    logger.info("Training %s: %d train points (%d images), %d ref points, "
                "%d classes, %d epochs, batches of %d", clf_type,
                train.nrows, n_images, ref.nrows, len(classes), nbr_epochs,
                batch_size)

    # Resume after the last finished epoch of this job, if one was saved.
    saved = checkpoint.current()
    clf, rng, ref_accs = saved.restore(clf, rng)
    steps: MLPSteps | None = None
    prefetch: OrderedChunks | None = None

    def take_over(chunks_left: Iterator, draw: Callable | None) -> None:
        # float32 MLP: scikit-learn's steps without its overhead
        # (training.mlp_steps), chunks gathered a chunk ahead on a second
        # thread (training.prefetch).
        nonlocal steps, prefetch, buffer32
        # A resumed training keeps the products engine it ran on.
        steps = MLPSteps(clf, engine=saved.engine)
        prefetch = OrderedChunks(train.matrix, train.labels, train.start,
                                 rows)
        # draw: the epoch's own generator, or (None) the classifier's.
        prefetch.add_epoch(chunks_left,
                           steps.draw_order if draw is None else draw)
        buffer32 = None  # the prefetcher has its own

    def epoch_plan(epoch: int) -> tuple[Iterator, Callable]:
        # A generator of its own, seeded as the training's is at the
        # epoch's start, draws the very same: the next epoch can be
        # gathered ahead while this one trains.
        generator = np.random.RandomState()
        order = epoch_order(generator, seed, epoch, n_images)
        return (epoch_chunks(train, order, batch_size),
                functools.partial(shuffled_order, generator=generator))

    fast = compute is np.float32
    try:
        for epoch in range(len(ref_accs), nbr_epochs):
            t0 = time.monotonic()
            if steps is None and fast and supports(clf):
                take_over(*epoch_plan(epoch))       # resumed from a checkpoint
            elif steps is None:
                order = epoch_order(rng, seed, epoch, n_images)
                chunks = epoch_chunks(train, order, batch_size)
                for segments in chunks:
                    x32, y = _batch(train, segments, buffer32, train.start)
                    if buffer64 is not None:
                        x32 = as_float64(x32, buffer64)
                    clf.partial_fit(x32, y, classes=classes)
                    if clf_type != 'MLP':
                        continue
                    if fast and supports(clf):
                        # The rest of this epoch draws from the classifier's
                        # generator, as its partial_fit would.
                        take_over(chunks, None)
                        break
                    # float64: the same steps, bit for bit, without Adam's
                    # temporaries (training.adam); a no-op after the first.
                    use_in_place_adam(clf)
            if prefetch is not None:
                if epoch + 1 < nbr_epochs:
                    prefetch.add_epoch(*epoch_plan(epoch + 1))
                for x32, y in prefetch.next_epoch():
                    steps.run_ordered(x32, y)
                # float32 weights score float32 rows as well as float64
                # ones, at half the cost: this is a progress figure.
                predicted = steps.predict(ref_x)
            else:
                predicted = predict_labels(clf, ref_x)
            ref_accs.append(accuracy(ref.labels, predicted))
            logger.info("Epoch %d/%d: reference accuracy %.4f (%.1f s)",
                        epoch + 1, nbr_epochs, ref_accs[-1],
                        time.monotonic() - t0)
            if clf_type == 'MLP':
                restore(clf)  # a checkpoint holds scikit-learn classes only
            engine = None if steps is None or steps.products is None \
                else steps.products.name
            saved.after_epoch(clf, rng, ref_accs, engine)
            if progress is not None:
                progress(epoch=epoch + 1, nbr_epochs=nbr_epochs,
                         ref_acc=ref_accs[-1])
    finally:
        if prefetch is not None:
            prefetch.close()
    del buffer32, buffer64

    if clf_type == 'MLP':
        # The generator only drove training; store the seed, not its
        # state, in the pickled model.
        clf.random_state = seed
        del clf._random_state
    ref_x = _ref_float64(ref_x)
    if precision == 'float64':  # PySpacer's classifier, bit for bit
        calibrated = CalibratedClassifierCV(clf, cv='prefit').fit(
            ref_x, ref.labels)
    else:  # every class at once, to a tighter optimum (training.calibration)
        calibrated = calibrate_prefit(clf, ref_x, ref.labels)
    return calibrated, ref_accs


def _ref_float64(ref_x: np.ndarray) -> np.ndarray:
    out = np.empty(ref_x.shape, dtype=np.float64)
    for i in range(0, len(ref_x), CHUNK_ROWS):
        out[i:i + CHUNK_ROWS] = ref_x[i:i + CHUNK_ROWS]
    return out


def fit_sets(trainer: Any, train_labels: Any, ref_labels: Any,
             nbr_epochs: int, clf_type: str, feature_loc: Any = None,
             ) -> tuple[Any, list[float]]:
    """Fit on ``train_labels`` and calibrate on ``ref_labels`` (ImageLabels):
    (CalibratedClassifierCV, reference accuracy after each epoch), as
    PySpacer's ``MiniBatchTrainer._train`` returns them."""
    clf_type, nbr_epochs = check_inputs(clf_type, nbr_epochs)
    seed = int(getattr(trainer, 'random_seed', None) or 0)
    with blas_threads(), open_training_data(
            {'train': train_labels, 'ref': ref_labels},
            feature_cache=feature_loc if feature_loc is not None
            else FeatureCache.AUTO,
            names=('train', 'ref')) as data:
        return fit(trainer, data.train, data.ref, nbr_epochs, clf_type,
                   seed=seed, precision=training_precision())


def train_minibatch(trainer: Any, labels: Any, nbr_epochs: int,
                    pc_models: list[Any], feature_loc: Any, clf_type: str,
                    progress: Progress | None = None,
                    ) -> tuple[Any, Any, Any]:
    """Run a MiniBatchTrainer: (CalibratedClassifierCV, ValResults,
    TrainClassifierReturnMsg).

    ``labels`` are preprocessed TrainingTaskLabels; ``feature_loc`` is the
    message's feature_cache_dir (AUTO, DISABLED or a directory) and says
    where a training set too big for memory is kept while training;
    ``progress(epoch=, nbr_epochs=, ref_acc=)`` is called after each epoch.
    The MLP's seed is the trainer's ``random_seed`` where it has one,
    else 0 (PySpacer's sequence).
    """

    t0 = time.time()
    clf_type, nbr_epochs = check_inputs(clf_type, nbr_epochs)
    seed = int(getattr(trainer, 'random_seed', None) or 0)
    precision = training_precision()
    with blas_threads(), \
            open_training_data(labels, feature_cache=feature_loc) as data:
        clf, ref_accs = fit(trainer, data.train, data.ref, nbr_epochs,
                            clf_type, seed=seed, progress=progress,
                            precision=precision)
        evaluation = evaluate_set(clf, data.val, pc_models)
    val_results = ValResults(scores=evaluation.scores, gt=evaluation.gt,
                             est=evaluation.est, classes=evaluation.classes)
    return_msg = TrainClassifierReturnMsg(
        acc=evaluation.acc, pc_accs=evaluation.pc_accs, ref_accs=ref_accs,
        # A resumed training counts the epochs its earlier runs saved.
        runtime=time.time() - t0 + checkpoint.current().earlier_seconds)
    return clf, val_results, return_msg
