"""What a classifier pickle may make, and how each thing may be made.

A PySpacer classifier pickle holds a scikit-learn ``CalibratedClassifierCV``
and the numpy arrays, dtypes and random states inside it, nothing else.
Each global it may name has one *kind*, and the kind fixes the only
opcodes that may use it (see :mod:`.unpickler`):

* ``INSTANCE``: a Python class made empty (``NEWOBJ`` or
  ``copyreg._reconstructor(cls, object, None)``) and then filled by one
  ``BUILD`` with a dict of attributes;
* ``LOSS``: scikit-learn's Cython SGD losses, called with at most one
  number (their ``__reduce__``);
* ``CALL``: a function or class called by ``REDUCE``; its entry checks the
  arguments' exact types and sizes before the call;
* ``ARGUMENT``: a name that is only ever passed to one of the calls above
  (``builtins.object``, ``numpy.ndarray``, the bit generator classes).

Names are resolved lazily (no scikit-learn import until a pickle needs
it); everything here only checks, the loader applies.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from spacer_worker.exceptions import UnsafePickleError

INSTANCE, LOSS, CALL, ARGUMENT = 'instance', 'loss', 'call', 'argument'

#: Python classes a classifier is made of.
INSTANCE_CLASSES: dict[str, tuple[str, ...]] = {
    'sklearn.calibration': ('CalibratedClassifierCV', '_CalibratedClassifier',
                            '_SigmoidCalibration'),
    'sklearn.linear_model._stochastic_gradient': ('SGDClassifier',),
    'sklearn.neural_network._multilayer_perceptron': ('MLPClassifier',),
    'sklearn.neural_network._stochastic_optimizers': ('AdamOptimizer',
                                                      'SGDOptimizer'),
    'sklearn.preprocessing._label': ('LabelBinarizer', 'LabelEncoder'),
}

LOSS_CLASSES: dict[str, tuple[str, ...]] = {
    'sklearn.linear_model._sgd_fast': (
        'Hinge', 'Log', 'ModifiedHuber', 'SquaredHinge', 'Huber',
        'SquaredLoss', 'EpsilonInsensitive', 'SquaredEpsilonInsensitive'),
}

#: numpy bit generator class -> its module.
BIT_GENERATORS = {'MT19937': 'numpy.random._mt19937',
                  'PCG64': 'numpy.random._pcg64',
                  'PCG64DXSM': 'numpy.random._pcg64',
                  'Philox': 'numpy.random._philox',
                  'SFC64': 'numpy.random._sfc64'}

#: Where older scikit-learn / numpy kept the same classes (PySpacer's own
#: mapping plus the modules scikit-learn 0.22 made private).
RENAMED_MODULES = {
    'sklearn.linear_model.sgd_fast': 'sklearn.linear_model._sgd_fast',
    'sklearn.linear_model.stochastic_gradient':
        'sklearn.linear_model._stochastic_gradient',
    'sklearn.preprocessing.label': 'sklearn.preprocessing._label',
    'sklearn.neural_network.multilayer_perceptron':
        'sklearn.neural_network._multilayer_perceptron',
    'sklearn.neural_network.stochastic_optimizers':
        'sklearn.neural_network._stochastic_optimizers',
    'numpy.core.multiarray': 'numpy._core.multiarray',
    'numpy.core.numeric': 'numpy._core.numeric',
}

# numpy dtype names a classifier's arrays use: bool, ints, floats,
# complex, object, and fixed-width strings (class labels).
_DTYPE_NAME = re.compile(r'[<>|=]?(b1|[iu][1248]|f[248]|c(8|16)|O8?|'
                         r'[US][0-9]{1,5})')
_LATIN1 = ('latin1', 'latin-1', 'iso-8859-1', 'iso8859-1', 'l1')
MAX_NDIM = 32


class Global:
    """What the loader pushes for a global: an inert token, never the
    class or function itself, so no opcode but the ones the token's kind
    allows can reach the real object."""

    __slots__ = ('module', 'name', 'kind', 'target')

    def __init__(self, module: str, name: str, kind: str, target: Any):
        for key, value in (('module', module), ('name', name),
                           ('kind', kind), ('target', target)):
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError('pickle globals are read-only')

    def __reduce__(self) -> Any:
        raise TypeError('pickle globals cannot be pickled')

    def __repr__(self) -> str:
        return f'{self.module}.{self.name}'


@dataclass(frozen=True)
class Entry:
    kind: str
    module: str
    name: str
    #: For CALL entries: check(args, loader) -> the made object.
    check: Callable[[tuple, Any], Any] | None = None

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


def refuse(reason: str) -> UnsafePickleError:
    return UnsafePickleError(reason)


def is_token(value: Any, module: str, name: str) -> bool:
    return (type(value) is Global and value.module == module
            and value.name == name)


def _product(shape: tuple) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def check_array_size(shape: tuple[int, ...], dtype: Any) -> None:
    """Refuse an array over PICKLE_ARRAY_MAX_BYTES before it is made. An
    element counts at least one byte: a zero-size dtype ('S0') would let a
    few bytes of pickle declare 10^12 elements, which cost nothing until
    anything walks them."""
    from spacer_worker import config

    limit = config.get('PICKLE_ARRAY_MAX_BYTES')
    size = _product(shape) * max(1, dtype.itemsize)
    if size > limit:
        raise refuse(f'an array of shape {shape} and dtype {dtype.str} '
                     f'counts {size} bytes (an element at least one), over '
                     f'the PICKLE_ARRAY_MAX_BYTES limit of {limit}')


def check_shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is not tuple or len(shape) > MAX_NDIM or not all(
            type(d) is int and d >= 0 for d in shape):
        raise refuse(f'an array shape must be a tuple of at most {MAX_NDIM} '
                     f'non-negative ints, got a {type(shape).__name__}')
    return shape


def _raw_length(data: Any) -> int:
    if type(data) in (bytes, bytearray):
        return len(data)
    if type(data) is str:  # Python 2 pickles: latin-1 text
        return len(data)
    raise refuse(f'array data must be bytes, got {type(data).__name__}')


# --- the calls a classifier pickle makes ----------------------------------


def _reconstructor(args: tuple, loader: Any) -> Any:
    # copyreg._reconstructor(cls, object, None): protocol 0/1 new-style
    # instances; only the empty-object form is allowed.
    if (len(args) != 3 or type(args[0]) is not Global
            or args[0].kind != INSTANCE
            or not is_token(args[1], 'builtins', 'object')
            or args[2] is not None):
        raise refuse('copyreg._reconstructor may only make an empty '
                     'instance of an allowed class')
    return loader.new_instance(args[0])


def _encode(args: tuple, loader: Any) -> bytes:
    # Protocol 2 writes bytes as _codecs.encode(text, 'latin1').
    if (len(args) != 2 or type(args[0]) is not str
            or type(args[1]) is not str or args[1].lower() not in _LATIN1):
        given = args[1] if len(args) == 2 else f'{len(args)} arguments'
        raise refuse(f"_codecs.encode is only allowed as (text, 'latin1'), "
                     f"how protocol 2 writes bytes; got {given!r}"[:300])
    return args[0].encode('latin1')


def _dtype(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if len(args) != 3 or type(args[0]) is not str \
            or not _DTYPE_NAME.fullmatch(args[0]):
        raise refuse('numpy.dtype may only make a plain numeric, object or '
                     'string dtype')
    if args[1] not in (False, 0) or args[2] not in (True, 1):
        raise refuse('numpy.dtype must be called as (name, False, True), '
                     'a fresh copy')
    return np.dtype(args[0], False, True)


def _array_reconstruct(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if (len(args) != 3 or not is_token(args[0], 'numpy', 'ndarray')
            or args[1] != (0,) or type(args[1]) is not tuple
            or args[2] not in (b'b', 'b')):
        raise refuse('numpy _reconstruct may only make the empty '
                     "placeholder array (ndarray, (0,), b'b')")
    return np._core.multiarray._reconstruct(np.ndarray, (0,), b'b')


def _scalar(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if len(args) != 2:
        raise refuse('numpy scalar takes (dtype, data)')
    dtype = loader.ready_dtype(args[0])
    if dtype.hasobject or _raw_length(args[1]) != dtype.itemsize:
        raise refuse('a numpy scalar needs data of exactly its dtype size')
    return np._core.multiarray.scalar(dtype, args[1])


def _frombuffer(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if len(args) != 4 or type(args[0]) not in (bytes, bytearray) \
            or args[3] not in ('C', 'F'):
        raise refuse('numpy _frombuffer takes (bytes, dtype, shape, order)')
    dtype = loader.ready_dtype(args[1])
    shape = check_shape(args[2])
    check_array_size(shape, dtype)
    if dtype.hasobject or len(args[0]) != _product(shape) * dtype.itemsize:
        raise refuse('numpy _frombuffer data does not match its shape')
    return np._core.numeric._frombuffer(args[0], dtype, shape, args[3])


def _bit_generator(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy.random._pickle as npp
    if not args:
        return npp.__bit_generator_ctor()
    if len(args) == 1 and type(args[0]) is Global \
            and BIT_GENERATORS.get(args[0].name) == args[0].module:
        return args[0].target()
    if len(args) == 1 and type(args[0]) is str and args[0] in BIT_GENERATORS:
        return npp.__bit_generator_ctor(args[0])
    raise refuse('a bit generator may only be made from a numpy bit '
                 'generator class or name')


def _random_state(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    import numpy.random._pickle as npp
    if not args:
        return np.random.RandomState()
    if len(args) == 1 and loader.is_bit_generator(args[0]):
        return np.random.RandomState(args[0])
    if (len(args) in (1, 2) and type(args[0]) is str
            and args[0] in BIT_GENERATORS
            and (len(args) == 1 or is_token(
                args[1], 'numpy.random._pickle', '__bit_generator_ctor'))):
        return npp.__randomstate_ctor(args[0])
    raise refuse('a RandomState may only be made from a bit generator '
                 'made in this pickle or a bit generator name')


def _seed_sequence(args: tuple, loader: Any) -> Any:
    # Cython's pickle of SeedSequence (the global RandomState of an MLP
    # trained without random_state, as PySpacer's are, carries one):
    # (class, layout checksum, None), then BUILD with its fields.
    # Lazy: numpy stays off the client, which imports storage.
    from numpy.random import bit_generator
    if (len(args) != 3 or not is_token(args[0], 'numpy.random.bit_generator',
                                       'SeedSequence')
            or type(args[1]) is not int or args[2] is not None):
        raise refuse('a SeedSequence is only made empty, as numpy pickles '
                     'it')
    return bit_generator.__pyx_unpickle_SeedSequence(
        bit_generator.SeedSequence, args[1], None)


def _legacy_random_state(args: tuple, loader: Any) -> Any:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if args:
        raise refuse('numpy.random.__RandomState_ctor takes no arguments')
    return np.random.RandomState()


def _container(kind: type) -> Callable[[tuple, Any], Any]:
    def check(args: tuple, loader: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and type(args[0]) in (list, tuple, set, frozenset):
            loader.charge(len(args[0]))
            if kind in (set, frozenset):
                for item in args[0]:
                    loader.check_key(item)
            return kind(args[0])
        raise refuse(f'builtins.{kind.__name__} may only copy a list, tuple '
                     f'or set of the pickle (never a size or an iterator)')
    return check


def _dict(args: tuple, loader: Any) -> dict:
    if not args:
        return {}
    if len(args) == 1 and type(args[0]) is dict:
        loader.charge(len(args[0]))
        return dict(args[0])
    raise refuse('builtins.dict may only copy a dict of the pickle')


def _bytes_like(kind: type) -> Callable[[tuple, Any], Any]:
    def check(args: tuple, loader: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and type(args[0]) in (bytes, bytearray):
            return kind(args[0])
        if (len(args) == 2 and type(args[0]) is str
                and type(args[1]) is str and args[1].lower() in _LATIN1):
            return kind(args[0], 'latin1')
        raise refuse(f'builtins.{kind.__name__} may only copy bytes or '
                     f'latin-1 text of the pickle (never a size)')
    return check


def _complex(args: tuple, loader: Any) -> complex:
    if len(args) <= 2 and all(type(a) in (int, float) for a in args):
        return complex(*args)
    raise refuse('builtins.complex takes at most two numbers')


def _ordered_dict(args: tuple, loader: Any) -> Any:
    if args:
        raise refuse('collections.OrderedDict is only made empty')
    return OrderedDict()


_CALLS: dict[tuple[str, str], Callable[[tuple, Any], Any]] = {
    ('copyreg', '_reconstructor'): _reconstructor,
    ('_codecs', 'encode'): _encode,
    ('numpy', 'dtype'): _dtype,
    ('numpy._core.multiarray', '_reconstruct'): _array_reconstruct,
    ('numpy._core.multiarray', 'scalar'): _scalar,
    ('numpy._core.numeric', '_frombuffer'): _frombuffer,
    ('numpy.random._pickle', '__bit_generator_ctor'): _bit_generator,
    ('numpy.random._pickle', '__randomstate_ctor'): _random_state,
    ('numpy.random', '__RandomState_ctor'): _legacy_random_state,
    ('numpy.random.bit_generator', '__pyx_unpickle_SeedSequence'):
        _seed_sequence,
    ('builtins', 'list'): _container(list),
    ('builtins', 'tuple'): _container(tuple),
    ('builtins', 'set'): _container(set),
    ('builtins', 'frozenset'): _container(frozenset),
    ('builtins', 'dict'): _dict,
    ('builtins', 'bytes'): _bytes_like(bytes),
    ('builtins', 'bytearray'): _bytes_like(bytearray),
    ('builtins', 'complex'): _complex,
    ('collections', 'OrderedDict'): _ordered_dict,
}


@cache
def entries() -> dict[tuple[str, str], Entry]:
    """Every global a classifier pickle may name, by (module, name)."""
    table: dict[tuple[str, str], Entry] = {}
    for module, names in INSTANCE_CLASSES.items():
        for name in names:
            table[module, name] = Entry(INSTANCE, module, name)
    for module, names in LOSS_CLASSES.items():
        for name in names:
            table[module, name] = Entry(LOSS, module, name)
    for (module, name), check in _CALLS.items():
        table[module, name] = Entry(CALL, module, name, check)
    table['builtins', 'object'] = Entry(ARGUMENT, 'builtins', 'object')
    table['numpy', 'ndarray'] = Entry(ARGUMENT, 'numpy', 'ndarray')
    for name, module in BIT_GENERATORS.items():
        table[module, name] = Entry(ARGUMENT, module, name)
    table['numpy.random.bit_generator', 'SeedSequence'] = Entry(
        ARGUMENT, 'numpy.random.bit_generator', 'SeedSequence')
    return table


def allowed_objects() -> list[Any]:
    """Every class and function a classifier pickle may name (for tests
    that check none of them is changed by a refused pickle)."""
    return [entry.resolve() for entry in entries().values()]
