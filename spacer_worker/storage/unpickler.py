"""A pickle loader that admits only what a classifier pickle is made of.

``pickle.load`` imports and calls any global a pickle names, so a
classifier file from an untrusted bucket could run ``os.system``. This
loader resolves a global only when it is on the allowlist below (the
scikit-learn estimators, numpy arrays/dtypes/random states, a few
builtins); anything else raises UnsafePickleError naming the global,
before it is imported or called.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from typing import Any

from spacer_worker.exceptions import UnsafePickleError

_SGD_LOSSES = {'Hinge', 'Log', 'ModifiedHuber', 'SquaredHinge', 'Huber',
               'SquaredLoss', 'EpsilonInsensitive',
               'SquaredEpsilonInsensitive', 'Classification', 'Regression',
               'LossFunction'}

#: module -> names a classifier pickle may use.
ALLOWED: dict[str, frozenset[str]] = {module: frozenset(names) for module, names in {
    'builtins': {'object', 'set', 'frozenset', 'list', 'dict', 'tuple',
                 'int', 'float', 'complex', 'bool', 'str', 'bytes',
                 'bytearray', 'slice', 'range'},
    'copyreg': {'_reconstructor'},
    'collections': {'OrderedDict', 'defaultdict'},
    'numpy': {'ndarray', 'dtype'},
    'numpy._core.multiarray': {'_reconstruct', 'scalar'},
    'numpy._core.numeric': {'_frombuffer'},
    'numpy.random': {'__RandomState_ctor'},
    'numpy.random._pickle': {'__randomstate_ctor', '__bit_generator_ctor',
                             '__generator_ctor'},
    'numpy.random.mtrand': {'RandomState'},
    'numpy.random._generator': {'Generator'},
    'numpy.random._mt19937': {'MT19937'},
    'numpy.random._pcg64': {'PCG64', 'PCG64DXSM'},
    'numpy.random._philox': {'Philox'},
    'numpy.random._sfc64': {'SFC64'},
    'numpy.random.bit_generator': {'SeedSequence',
                                   '__pyx_unpickle_SeedSequence'},
    'scipy.sparse._csr': {'csr_matrix', 'csr_array'},
    'scipy.sparse._csc': {'csc_matrix', 'csc_array'},
    'scipy.sparse._coo': {'coo_matrix', 'coo_array'},
    'sklearn.calibration': {'CalibratedClassifierCV', '_CalibratedClassifier',
                            '_SigmoidCalibration'},
    'sklearn.isotonic': {'IsotonicRegression'},
    'sklearn.preprocessing._label': {'LabelBinarizer', 'LabelEncoder'},
    'sklearn.linear_model._sgd_fast': _SGD_LOSSES,
    'sklearn.neural_network._stochastic_optimizers': {'AdamOptimizer',
                                                      'SGDOptimizer'},
}.items()}

#: Where older scikit-learn / numpy / scipy kept the same classes. This
#: covers PySpacer's own mapping (sgd_fast, stochastic_gradient) and the
#: other modules scikit-learn 0.22 made private.
RENAMED_MODULES = {
    'sklearn.linear_model.sgd_fast': 'sklearn.linear_model._sgd_fast',
    'sklearn.linear_model.stochastic_gradient':
        'sklearn.linear_model._stochastic_gradient',
    'sklearn.preprocessing.label': 'sklearn.preprocessing._label',
    'sklearn.neural_network.multilayer_perceptron':
        'sklearn.neural_network._multilayer_perceptron',
    'numpy.core.multiarray': 'numpy._core.multiarray',
    'numpy.core.numeric': 'numpy._core.numeric',
    'scipy.sparse.csr': 'scipy.sparse._csr',
    'scipy.sparse.csc': 'scipy.sparse._csc',
    'scipy.sparse.coo': 'scipy.sparse._coo',
}


def _encode_latin1(text: str, encoding: str = 'utf-8',
                   errors: str = 'strict') -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(text, 'latin1');
    # this stand-in does only that.
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise UnsafePickleError(
            f"pickle calls _codecs.encode with encoding {encoding!r}; only "
            f"'latin1' (how protocol 2 writes bytes) is allowed.")
    return text.encode('latin1', errors)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` consults the allowlist."""

    def __init__(self, file: Any, where: str = 'pickle') -> None:
        # latin1 reads Python 2 pickles (numpy arrays in sklearn 0.17 files).
        super().__init__(file, fix_imports=True, encoding='latin1')
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        asked = f'{module}.{name}'
        module, name = _modern_name(module, name)
        if (module, name) == ('_codecs', 'encode'):
            return _encode_latin1
        found = _resolve(module, name)
        if found is None:
            raise UnsafePickleError(
                f"{self.where} refers to {asked!r}, which is not allowed in "
                f"a classifier pickle; it was refused without being "
                f"imported or run. Only load classifiers from sources you "
                f"trust.")
        return found


def restricted_loads(data: bytes, where: str = 'pickle') -> Any:
    return RestrictedUnpickler(io.BytesIO(data), where).load()


def _modern_name(module: str, name: str) -> tuple[str, str]:
    # Python 2 names (__builtin__, copy_reg) first, as pickle would.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return RENAMED_MODULES.get(module, module), name


def _resolve(module: str, name: str) -> Any:
    allowed = ALLOWED.get(module, frozenset())
    if '.' in name or (name.startswith('_') and name not in allowed):
        return None
    if name in allowed:
        return getattr(importlib.import_module(module), name, None)
    if module == 'sklearn' or module.startswith('sklearn.'):
        # Any scikit-learn estimator class: building one only stores its
        # parameters. Functions and other classes stay refused.
        from sklearn.base import BaseEstimator
        try:
            candidate = getattr(importlib.import_module(module), name, None)
        except ImportError:
            return None
        if isinstance(candidate, type) and issubclass(candidate,
                                                      BaseEstimator):
            return candidate
    return None
