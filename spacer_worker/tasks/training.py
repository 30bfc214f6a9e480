"""The training task: train_classifier (labels' feature files in, a
classifier, its validation results and optional report out). The training
itself is :mod:`spacer_worker.training`'s."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from spacer_worker import config
from spacer_worker.data_classes.results import (
    TrainClassifierReturnMsg,
)
from spacer_worker.exceptions import PermanentError
from spacer_worker.exceptions.failures import time_limit_behind
from spacer_worker.messages.task_messages import TrainClassifierMsg
from spacer_worker.storage import blobs, store_classifier
from spacer_worker.storage.classifiers import load_classifier
from spacer_worker.task_utils import preprocess_labels
from spacer_worker.training import checkpoint
from spacer_worker.training.threads import thread_count as blas_thread_count

logger = logging.getLogger(__name__)

__all__ = ['train_classifier']


def train_classifier(msg: TrainClassifierMsg,
                     progress: Callable[..., None] | None = None,
                     ) -> TrainClassifierReturnMsg:
    """Preprocess the labels, train, store the classifier and ValResults.

    ``progress(epoch=, nbr_epochs=, ref_acc=)`` is called after each epoch.
    Nothing is stored unless training and evaluation succeed.
    """
    labels = preprocess_labels(msg.labels)
    logger.info(
        "Training %s (%s, %d BLAS threads): %d/%d/%d train/ref/val labels, "
        "%d classes", msg.job_token, msg.clf_type, blas_thread_count(),
        labels.train.label_count, labels.ref.label_count,
        labels.val.label_count, len(labels.ref.classes_set))
    pc_models = [load_classifier(loc) for loc in msg.previous_model_locs]
    # A redelivered run resumes after the last epoch its checkpoint saved.
    with checkpoint.for_job(msg) as saved:
        try:
            clf, val_results, return_msg = _run_trainer(
                msg.trainer, labels, msg.nbr_epochs, pc_models,
                msg.feature_cache_dir, msg.clf_type, progress)
        except PermanentError:
            saved.remove()   # no run of this job will get further
            raise
    store_classifier(msg.model_loc, clf)
    val_results.store(msg.valresult_loc)
    # On a worker the outputs above are staged until the result commits:
    # the checkpoint stays until then, so a run killed before the commit
    # resumes after the last epoch instead of epoch 0.
    blobs.when_committed(saved.remove)
    if config.get('TRAINING_REPORT'):
        _write_report(msg, val_results, return_msg)
    return return_msg


def _write_report(msg: TrainClassifierMsg, val_results: Any,
                  return_msg: Any) -> None:
    # The classifier is stored: a report that cannot be drawn is logged,
    # it does not fail the training.
    try:
        from spacer_worker.report import (
            build_report,
            report_folder_for,
            write_report,
        )
        folder = report_folder_for(msg.model_loc)
        index = write_report(build_report(
            val_results, train_result=return_msg,
            title=f'Training report: {msg.job_token}'), folder)
    except ImportError as e:
        logger.error('TRAINING_REPORT is on but the report cannot be drawn '
                     '(%s); install spacer_worker[worker] (matplotlib).', e)
    except Exception as e:
        if time_limit_behind(e) is not None:
            # The training's result is whole; only the optional report is
            # cut short, so the task still succeeds.
            logger.warning(
                'Training %s: the classifier is stored, but the soft time '
                'limit (90%% of TRAIN_TIME_LIMIT) stopped its report before '
                'it was written. Raise TRAIN_TIME_LIMIT, or set '
                'TRAINING_REPORT off, to skip this.', msg.job_token)
        else:
            logger.exception('Training %s: the classifier is stored, but '
                             'its report could not be written.',
                             msg.job_token)
    else:
        logger.info('Training %s: report at %s', msg.job_token, index.key)


def _run_trainer(trainer: Any, labels: Any, nbr_epochs: int,
                 pc_models: list[Any], feature_cache_dir: Any,
                 clf_type: str, progress: Callable[..., None] | None,
                 ) -> tuple[Any, Any, Any]:
    # Built-in trainers take the cache setting and a progress callback; a
    # custom trainer written for PySpacer takes only PySpacer's four
    # arguments, so pass the extras only to those that accept them.
    params = inspect.signature(trainer.__call__).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    extras = {name: value for name, value in
              (('feature_loc', feature_cache_dir), ('progress', progress))
              if takes_any or name in params}
    return trainer(labels=labels, nbr_epochs=nbr_epochs,
                   pc_models=pc_models, clf_type=str(clf_type), **extras)
