"""Classifiers: pickled ``CalibratedClassifierCV``s, as PySpacer stores them.

Written with pickle protocol 2 like PySpacer 0.14.0, so files go both ways
(both sides pin scikit-learn 1.5.2: estimator pickles are only guaranteed
between identical scikit-learn versions). Loading goes through
:mod:`.unpickler`, which refuses any global a classifier does not need, then
applies PySpacer's upgrades for classifiers pickled by older scikit-learn
(0.17.1, 0.22.1, 1.1.3).

No cache here: a classifier overwritten at the same location must not be
served stale; callers that want one should key it by the file's hash.
"""

from __future__ import annotations

import pickle
import warnings
from typing import TYPE_CHECKING, Any

from spacer_worker import config
from spacer_worker.exceptions import ClassifierLoadError, ClassifierTooLargeError
from spacer_worker.storage.blobs import describe, load_bytes, store_bytes
from spacer_worker.storage.unpickler import ClassifierUnpickler as RestrictedUnpickler
from spacer_worker.storage.unpickler import check_graph, restricted_loads, unreadable

if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV

PICKLE_PROTOCOL = 2
# scikit-learn versions PySpacer has trained with; their version warnings
# are expected and silenced (any other version still warns).
_KNOWN_OLD_VERSIONS = r'((pre-0\.18)|(0\.22\.1)|(1\.1\.3))'


def dump_classifier(clf: CalibratedClassifierCV) -> bytes:
    """The pickle bytes PySpacer would write for ``clf``."""
    # Lazy: scikit-learn stays off the client, which imports storage.
    from sklearn.calibration import CalibratedClassifierCV
    if not isinstance(clf, CalibratedClassifierCV):
        raise TypeError(
            f"Only CalibratedClassifierCV classifiers can be stored, got "
            f"{type(clf).__name__}.")
    if not hasattr(clf, 'calibrated_classifiers_'):
        raise ValueError("Only fitted classifiers can be stored; call "
                         "fit() first.")
    return pickle.dumps(clf, protocol=PICKLE_PROTOCOL)


def check_classifier_size(size: int, where: str) -> None:
    """Refuse a pickle over CLASSIFIER_MAX_BYTES before it is unpickled."""
    limit = config.get('CLASSIFIER_MAX_BYTES')
    if size > limit:
        raise ClassifierTooLargeError(
            f"{where} is {size} bytes, over the CLASSIFIER_MAX_BYTES limit "
            f"of {limit}; raise that setting (SPACER_CLASSIFIER_MAX_BYTES) "
            f"if this classifier is genuine.")


def parse_classifier(data: bytes, where: str = 'classifier'
                     ) -> CalibratedClassifierCV:
    """Unpickle (restricted), check the type and upgrade old classifiers.

    Untrusted bytes end in a ClassifierLoadError (or its subclasses) and
    nothing else, whatever they hold.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ClassifierLoadError(
            f"{where}: expected pickle bytes, got {type(data).__name__}.")
    check_classifier_size(len(data), where)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            'ignore', category=UserWarning,
            message=r'Trying to unpickle estimator [A-Za-z_]+ from version '
                    + _KNOWN_OLD_VERSIONS)
        try:
            clf = restricted_loads(bytes(data), where)
            return _upgrade(clf, where)
        except ClassifierLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any failure
            raise unreadable(where, e) from e


def load_classifier(loc: Any) -> CalibratedClassifierCV:
    """The classifier stored at ``loc``; refuses unsafe or foreign pickles."""
    return parse_classifier(load_bytes(loc), describe(loc))


def store_classifier(loc: Any, clf: CalibratedClassifierCV) -> None:
    """Store a fitted ``CalibratedClassifierCV`` at ``loc`` (atomically)."""
    store_bytes(loc, dump_classifier(clf))


def _upgrade(clf: Any, where: str) -> CalibratedClassifierCV:
    # Lazy: scikit-learn stays off the client, which imports storage.
    from sklearn.calibration import CalibratedClassifierCV
    if not isinstance(clf, CalibratedClassifierCV):
        raise ClassifierLoadError(
            f"{where} holds a {type(clf).__module__}.{type(clf).__name__}, "
            f"not a CalibratedClassifierCV.")
    if getattr(clf, 'cv', None) != 'prefit':
        raise ClassifierLoadError(
            f"{where} is a CalibratedClassifierCV with cv="
            f"{getattr(clf, 'cv', None)!r}; only cv='prefit' classifiers "
            f"(what PySpacer trains) are supported.")
    _check_parts(clf, where)
    try:
        # Added after scikit-learn 0.22.1; unused with cv='prefit' but
        # expected to exist.
        if not hasattr(clf, 'ensemble'):
            clf.ensemble = True
        if not hasattr(clf, 'n_jobs'):
            clf.n_jobs = None
        _rename_base_estimator(clf)
        _upgrade_estimator(clf.estimator)
        for calibrated in clf.calibrated_classifiers_:
            _rename_base_estimator(calibrated)
            _upgrade_estimator(calibrated.estimator)
            # 0.17.1 had no 'classes'; 0.22.1 left it None.
            if getattr(calibrated, 'classes', None) is None:
                calibrated.classes = calibrated.classes_
            # 'calibrators' replaced 'calibrators_' by 0.24.
            if not hasattr(calibrated, 'calibrators'):
                calibrated.calibrators = calibrated.calibrators_
    except AttributeError as e:
        raise ClassifierLoadError(
            f"{where} is a CalibratedClassifierCV missing fitted parts "
            f"({e}); it cannot classify.") from e
    return clf


def _rename_base_estimator(obj: Any) -> None:
    # scikit-learn 1.2 renamed base_estimator to estimator.
    if not hasattr(obj, 'estimator') and hasattr(obj, 'base_estimator'):
        obj.estimator = obj.base_estimator
        del obj.base_estimator


def _upgrade_estimator(estimator: Any) -> None:
    # Lazy: scikit-learn stays off the client, which imports storage.
    from sklearn.linear_model import SGDClassifier
    # scikit-learn 1.1 renamed the loss 'log' to 'log_loss'.
    if isinstance(estimator, SGDClassifier) and estimator.loss == 'log':
        estimator.loss = 'log_loss'


def _check_parts(clf: Any, where: str) -> None:
    # The unpickler admits only classifier types; this checks they are
    # where a CalibratedClassifierCV expects them, so a malformed one fails
    # here and not in the middle of a classification.
    # Lazy: scikit-learn stays off the client, which imports storage.
    from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
    from sklearn.linear_model import SGDClassifier
    from sklearn.neural_network import MLPClassifier

    estimators = (MLPClassifier, SGDClassifier)
    parts = vars(clf)
    calibrated = parts.get('calibrated_classifiers_')
    problem = None
    if not isinstance(parts.get('estimator', parts.get('base_estimator')),
                      estimators):
        problem = 'its estimator is not an MLPClassifier or SGDClassifier'
    elif type(calibrated) is not list or not calibrated:
        problem = 'it is missing fitted parts (no calibrated classifiers)'
    else:
        for part in calibrated:
            inner = vars(part) if isinstance(part, _CalibratedClassifier) \
                else {}
            calibrators = inner.get('calibrators', inner.get('calibrators_'))
            if not isinstance(inner.get('estimator',
                                        inner.get('base_estimator')),
                              estimators) or type(calibrators) is not list \
                    or not all(isinstance(c, _SigmoidCalibration)
                               for c in calibrators):
                problem = ('a calibrated classifier is not an MLP/SGD '
                           'estimator with sigmoid calibrators')
                break
    if problem:
        raise ClassifierLoadError(
            f"{where} is a CalibratedClassifierCV that cannot classify: "
            f"{problem}.")


class ClassifierUnpickler(RestrictedUnpickler):
    """PySpacer's ``ClassifierUnpickler(file)``: ``load()`` returns the
    upgraded CalibratedClassifierCV. Unlike PySpacer's, it makes only
    allowlisted objects (see :mod:`.unpickler`) and reads at most the
    classifier size limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # pickle.Unpickler's (file, *, fix_imports, encoding...); the
        # decoding options are ours (latin1 reads Python 2 pickles).
        file = args[0] if args else kwargs.pop('file')
        data = file if isinstance(file, (bytes, bytearray)) else file.read()
        super().__init__(bytes(data), kwargs.pop('where', 'classifier'))

    def load(self) -> CalibratedClassifierCV:
        clf = super().load()
        check_graph(clf, self.where)
        return _upgrade(clf, self.where)

    @staticmethod
    def patch_estimator(estimator: Any) -> None:
        """Bring an estimator of an older scikit-learn up to date in place
        (``load`` does it for every estimator of the classifier)."""
        _upgrade_estimator(estimator)
