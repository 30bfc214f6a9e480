"""Per-epoch training checkpoints, so an interrupted training resumes.

A training stopped by SIGTERM, kill -9 or a lost worker is delivered again
(late acks, leases); without a checkpoint it starts over from epoch 0,
which for a multi-day HIGH-spec training is days lost. After every epoch
the estimator as it stands (coefficients, intercepts, the Adam optimizer's
moments and step count, loss curve), the random generator's state, the
epoch count and the reference accuracies so far are written, atomically,
to one object. A redelivered run of the same job loads it and carries on
with the next epoch; with the same seed it ends with the very classifier
an uninterrupted run gives.

A checkpoint belongs to one job: its name and its content carry a hash of
the TrainClassifierMsg (labels, locations, trainer, epochs), the training
precision and the numpy/scikit-learn versions. One written for anything
else is never used. It is read with the restricted unpickler of
classifier files, and removed once the model and validation results are
stored.

Where (``TRAINING_CHECKPOINT``): ``model`` (default) beside the output
model, ``<model key>.checkpoint-<hash>``, in the same storage;
``feature_cache`` in the message's feature_cache_dir when that is a
directory (else beside the model); an ``s3://bucket/prefix`` or absolute
directory; ``off``.

The training loop sees only :func:`current` and the two calls of
:class:`Checkpoint` (``restore`` before the first epoch, ``after_epoch``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Iterator
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import ConfigError, SpacerError

logger = logging.getLogger(__name__)

FORMAT = 1
OFF = 'off'
BESIDE_MODEL = 'model'
FEATURE_CACHE = 'feature_cache'

_current: contextvars.ContextVar[Checkpoint | None] = \
    contextvars.ContextVar('spacer_training_checkpoint', default=None)


def job_hash(msg: Any) -> str:
    """What a checkpoint must match to be resumed from."""
    import numpy
    import sklearn

    from spacer_worker.training.matrix import training_precision

    identity = {'format': FORMAT, 'message': msg.serialize(),
                'precision': training_precision(),
                'numpy': numpy.__version__, 'sklearn': sklearn.__version__}
    text = json.dumps(identity, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def location_for(msg: Any, digest: str) -> Any | None:
    """Where the checkpoint of ``msg`` lives, or None when off."""
    from spacer_worker.data_classes import DataLocation, LocationRoot

    setting = (config.get('TRAINING_CHECKPOINT') or BESIDE_MODEL).strip()
    name = f'checkpoint-{digest[:32]}'
    if setting.lower() == OFF:
        return None
    if setting.lower() == FEATURE_CACHE:
        directory = str(getattr(msg, 'feature_cache_dir', '') or '')
        if directory.startswith('/'):
            return DataLocation('filesystem', f'{directory.rstrip("/")}/'
                                              f'{name}.pkl')
        setting = BESIDE_MODEL
    if setting.lower() == BESIDE_MODEL:
        model = msg.model_loc
        if not model.is_writable:
            return None
        return DataLocation(model.storage_type, f'{model.key}.{name}',
                            model.bucket_name)
    try:
        root = LocationRoot.parse(setting, 'TRAINING_CHECKPOINT')
    except ConfigError as e:
        raise ConfigError(
            f"TRAINING_CHECKPOINT {setting!r}: expected 'model', "
            f"'feature_cache', 'off', s3://bucket/prefix or an absolute "
            f"directory ({e}).") from e
    return root.location(f'{name}.pkl')


class Checkpoint:
    """The checkpoint of one training job at one location."""

    #: Training seconds of earlier runs, up to their last checkpoint.
    earlier_seconds = 0.0
    #: The products engine (training.products) the saved epochs ran on.
    engine: str | None = None

    def __init__(self, loc: Any, digest: str) -> None:
        self.loc = loc
        self.digest = digest
        self._started = time.monotonic()

    def _load(self) -> dict | None:
        from spacer_worker.storage.blobs import describe, exists, load_bytes
        from spacer_worker.storage.unpickler import restricted_loads

        where = describe(self.loc)
        try:
            if not exists(self.loc):
                return None
            state = restricted_loads(load_bytes(self.loc),
                                     where=f'checkpoint {where}')
        except (SpacerError, pickle.UnpicklingError, EOFError, ValueError,
                TypeError, AttributeError, ImportError) as e:
            logger.warning('Training checkpoint %s unreadable (%s: %s); '
                           'starting from epoch 0.', where,
                           type(e).__name__, e)
            return None
        if not isinstance(state, dict) or state.get('format') != FORMAT \
                or state.get('job') != self.digest:
            logger.warning('Training checkpoint %s belongs to another job; '
                           'not used.', where)
            return None
        return state

    def restore(self, clf: Any, rng: Any) -> tuple[Any, Any, list[float]]:
        """(estimator, generator, reference accuracies so far): the saved
        ones when a checkpoint of this job exists, else those given and
        []. The epochs done are ``len(ref_accs)``."""
        import numpy as np

        state = self._load()
        if state is None:
            return clf, rng, []
        self.earlier_seconds = float(state.get('seconds', 0.0))
        engine = state.get('products')
        self.engine = engine if isinstance(engine, str) else None
        clf = state['clf']
        # The MLP draws from the generator it holds (pickled with it); the
        # loop must reseed that very one.
        own = getattr(clf, 'random_state', None)
        if isinstance(own, np.random.RandomState):
            rng = own
        rng.set_state(state['rng'])
        ref_accs = [float(a) for a in state['ref_accs']]
        logger.info('Resuming training from its checkpoint after epoch %d '
                    '(%s).', len(ref_accs), self.loc.key)
        return clf, rng, ref_accs

    def after_epoch(self, clf: Any, rng: Any, ref_accs: list[float],
                    engine: str | None = None) -> None:
        """Write the state after ``len(ref_accs)`` epochs, atomically, with
        the products ``engine`` they ran on (a resume keeps it). A write
        that fails is logged and the training goes on: a checkpoint only
        saves time, it must not cost the training."""
        from spacer_worker.storage.blobs import store_bytes

        state = {'format': FORMAT, 'job': self.digest,
                 'epoch': len(ref_accs), 'ref_accs': list(ref_accs),
                 'rng': rng.get_state(), 'clf': clf, 'products': engine,
                 'seconds': self.earlier_seconds +
                 time.monotonic() - self._started}
        try:
            store_bytes(self.loc, pickle.dumps(state, protocol=4))
        except (SpacerError, OSError) as e:
            logger.warning('Could not write the training checkpoint after '
                           'epoch %d to %s (%s: %s); training goes on, but '
                           'an interruption now restarts from an earlier '
                           'epoch. Check TRAINING_CHECKPOINT.',
                           len(ref_accs), self.loc.key, type(e).__name__, e)

    def remove(self) -> None:
        from spacer_worker.storage.blobs import delete
        try:
            delete(self.loc)
        except SpacerError as e:  # clean-up only; the model is stored
            logger.warning('Could not remove training checkpoint %s: %s',
                           self.loc.key, e)


class _NoCheckpoint(Checkpoint):
    def __init__(self) -> None:
        pass

    def restore(self, clf: Any, rng: Any) -> tuple[Any, Any, list[float]]:
        return clf, rng, []

    def after_epoch(self, clf: Any, rng: Any, ref_accs: list[float],
                    engine: str | None = None) -> None:
        pass

    def remove(self) -> None:
        pass


NONE = _NoCheckpoint()


def current() -> Checkpoint:
    """The checkpoint of the training running in this context (a no-op
    one outside :func:`for_job`)."""
    return _current.get() or NONE


@contextlib.contextmanager
def for_job(msg: Any) -> Iterator[Checkpoint]:
    """Make ``msg``'s checkpoint the current one while its training runs."""
    digest = job_hash(msg)
    loc = location_for(msg, digest)
    checkpoint = NONE if loc is None else Checkpoint(loc, digest)
    token = _current.set(checkpoint)
    try:
        yield checkpoint
    finally:
        _current.reset(token)
