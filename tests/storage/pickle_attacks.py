"""Hand-written classifier pickles an attacker would send, by name.

Each is the raw opcode program (no helper class has to exist to make
it), so the tests show exactly what reaches the loader. ``SIZE`` is the
memory-bomb size; tests that run an attack against plain ``pickle`` to
show it is real pass a small one.
"""

from __future__ import annotations

import pickle
import struct

ADAM = b'sklearn.neural_network._stochastic_optimizers'
CALIBRATED = b'sklearn.calibration'
SIZE = 10 ** 10


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack('<I', len(data)) + data


def _int(value: int) -> bytes:
    data = value.to_bytes((value.bit_length() + 8) // 8, 'little',
                          signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _global(module: bytes, name: bytes) -> bytes:
    return pickle.GLOBAL + module + b'\n' + name + b'\n'


def set_class_attribute(module: bytes, cls: bytes, attr: str,
                        value: bytes) -> bytes:
    """BUILD with (None, {attr: value}) on a class: pickle's slot-state
    path calls setattr(cls, attr, value)."""
    return (b'\x80\x02' + _global(module, cls) + pickle.NONE
            + pickle.EMPTY_DICT + _str(attr) + value + pickle.SETITEM
            + pickle.TUPLE2 + pickle.BUILD + pickle.STOP)


def adam_get_updates() -> bytes:
    """The issue's 60-byte attack: AdamOptimizer._get_updates = list, so
    every update step returns the gradients themselves (gradient ascent)."""
    return set_class_attribute(ADAM, b'AdamOptimizer', '_get_updates',
                               _global(b'builtins', b'list'))


def calibrated_predict_proba() -> bytes:
    return set_class_attribute(CALIBRATED, b'_CalibratedClassifier',
                               'predict_proba', _global(b'builtins', b'list'))


def function_defaults() -> bytes:
    """Replace a pickling helper's defaults: every later RandomState
    unpickled in the process would get a PCG64."""
    return set_class_attribute(b'numpy.random._pickle',
                               b'__bit_generator_ctor', '__defaults__',
                               pickle.MARK + _str('PCG64') + pickle.TUPLE)


def function_dict() -> bytes:
    """BUILD with a plain dict on a function: updates its __dict__."""
    return (b'\x80\x02' + _global(b'copyreg', b'_reconstructor')
            + pickle.EMPTY_DICT + _str('pwned') + pickle.NEWTRUE
            + pickle.SETITEM + pickle.BUILD + pickle.STOP)


def setstate_shadow(size: int = SIZE) -> bytes:
    """An SGDClassifier whose own __setstate__ is bytearray; a second
    BUILD then calls bytearray(size)."""
    return (b'\x80\x02'
            + _global(b'sklearn.linear_model._stochastic_gradient',
                      b'SGDClassifier')
            + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.EMPTY_DICT
            + _str('__setstate__') + _global(b'builtins', b'bytearray')
            + pickle.SETITEM + pickle.BUILD + _int(size) + pickle.BUILD
            + pickle.STOP)


def list_range(size: int = 10 ** 9) -> bytes:
    """The issue's 43-byte bomb: builtins.list(builtins.range(10**9))."""
    return (_global(b'builtins', b'list') + pickle.MARK
            + _global(b'builtins', b'range') + b'(I' + str(size).encode()
            + b'\ntRtR.')


def bytes_of_size(size: int = SIZE) -> bytes:
    return (b'\x80\x02' + _global(b'builtins', b'bytes') + _int(size)
            + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


def bytearray_of_size(size: int = SIZE) -> bytes:
    return (b'\x80\x02' + _global(b'builtins', b'bytearray') + _int(size)
            + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


def object_array(size: int = 10 ** 5) -> bytes:
    """numpy _reconstruct of a size x size object array (zero-filled)."""
    return (b'\x80\x02' + _global(b'numpy.core.multiarray', b'_reconstruct')
            + _global(b'numpy', b'ndarray') + _int(size) + _int(size)
            + pickle.TUPLE2 + pickle.SHORT_BINBYTES + b'\x01O'
            + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP)


def ndarray_call(size: int = SIZE) -> bytes:
    """numpy.ndarray(shape, 'O'): allocates and zero-fills."""
    return (b'\x80\x02' + _global(b'numpy', b'ndarray') + _int(size)
            + pickle.TUPLE1 + _str('O') + pickle.TUPLE2 + pickle.REDUCE
            + pickle.STOP)


def randomstate_ctor(size: int = SIZE) -> bytes:
    """__randomstate_ctor(name, ctor) calls ctor(name): bytearray(size)."""
    return (b'\x80\x02' + _global(b'numpy.random._pickle',
                                  b'__randomstate_ctor')
            + _int(size) + _global(b'builtins', b'bytearray')
            + pickle.TUPLE2 + pickle.REDUCE + pickle.STOP)


def reconstructor_list(size: int = 10 ** 9) -> bytes:
    """copyreg._reconstructor(list, list, range(size)) runs
    list.__init__(obj, range(size))."""
    return (b'\x80\x02' + _global(b'copyreg', b'_reconstructor')
            + _global(b'builtins', b'list') + _global(b'builtins', b'list')
            + _global(b'builtins', b'range') + _int(size) + pickle.TUPLE1
            + pickle.REDUCE + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP)


def dtype_singleton() -> bytes:
    """numpy.dtype('f8', False, False) is the process-wide float64 dtype;
    BUILD would then change it in place."""
    return (b'\x80\x02' + _global(b'numpy', b'dtype') + _str('f8')
            + pickle.NEWFALSE + pickle.NEWFALSE + pickle.TUPLE3
            + pickle.REDUCE + pickle.MARK + _int(3) + _str('>') + pickle.NONE
            + pickle.NONE + pickle.NONE + _int(-1) + _int(-1) + _int(0)
            + pickle.TUPLE + pickle.BUILD + pickle.STOP)


def bytearray8_length(size: int = SIZE) -> bytes:
    """Protocol 5 BYTEARRAY8 declaring size bytes: pickle allocates them
    before reading (14 bytes in)."""
    return (b'\x80\x05' + pickle.BYTEARRAY8 + struct.pack('<Q', size)
            + b'x' + pickle.STOP)


def inst_opcode() -> bytes:
    """Protocol 0 INST: calls the class with arguments."""
    return b'(S\'x\'\nisklearn.calibration\nCalibratedClassifierCV\n.'


def append_to_class() -> bytes:
    """APPEND on a global class: pickle calls cls.append / cls.extend."""
    return (b'\x80\x02' + _global(b'builtins', b'set') + pickle.MARK
            + pickle.EMPTY_LIST + pickle.APPENDS + pickle.STOP)


def setitem_on_class() -> bytes:
    return (b'\x80\x02' + _global(CALIBRATED, b'CalibratedClassifierCV')
            + _str('predict') + pickle.NONE + pickle.SETITEM + pickle.STOP)


def deep_nesting(depth: int = 100_000) -> bytes:
    return b'\x80\x02' + pickle.EMPTY_LIST * depth + pickle.APPEND * (
        depth - 1) + pickle.STOP


def deep_tuple_key(depth: int = 1_000_000) -> bytes:
    """A dict keyed by a tuple nested a million deep: hashing it
    recurses in C and kills the worker process (segfault)."""
    return (b'\x80\x02' + pickle.EMPTY_DICT + pickle.NONE
            + pickle.TUPLE1 * depth + pickle.NONE + pickle.SETITEM
            + pickle.STOP)


def nested_object_arrays(depth: int = 3) -> bytes:
    """Object arrays inside object arrays: numpy frees them recursively
    in C, so 200,000 levels crash the process when they are dropped."""
    import numpy as np
    inner = None
    for _ in range(depth):
        outer = np.empty(1, dtype=object)
        outer[0] = inner
        inner = outer
    return pickle.dumps(inner, protocol=2)


#: Numbers that all hash alike: CPython hashes an int modulo 2**61 - 1.
HASH_MODULUS = (1 << 61) - 1


def colliding_dict_keys(count: int = 200_000) -> bytes:
    """A dict of ``count`` different int keys with one hash: inserting
    them is quadratic (2.6 MB that keep a process busy for minutes)."""
    body = b''
    for start in range(0, count, 1000):
        keys = range(start, min(start + 1000, count))
        body += pickle.MARK + b''.join(
            _int(k * HASH_MODULUS) + pickle.NONE for k in keys
        ) + pickle.SETITEMS
    return b'\x80\x04' + pickle.EMPTY_DICT + body + pickle.STOP


def colliding_set_items(count: int = 200_000) -> bytes:
    """The same through a frozenset."""
    items = b''.join(_int(i * HASH_MODULUS) for i in range(count))
    return b'\x80\x04' + pickle.MARK + items + pickle.FROZENSET + pickle.STOP


ALL = {
    'adam_get_updates': adam_get_updates,
    'calibrated_predict_proba': calibrated_predict_proba,
    'function_defaults': function_defaults,
    'function_dict': function_dict,
    'setstate_shadow': setstate_shadow,
    'list_range': list_range,
    'bytes_of_size': bytes_of_size,
    'bytearray_of_size': bytearray_of_size,
    'object_array': object_array,
    'ndarray_call': ndarray_call,
    'randomstate_ctor': randomstate_ctor,
    'reconstructor_list': reconstructor_list,
    'dtype_singleton': dtype_singleton,
    'bytearray8_length': bytearray8_length,
    'inst_opcode': inst_opcode,
    'append_to_class': append_to_class,
    'setitem_on_class': setitem_on_class,
    'deep_nesting': deep_nesting,
    'deep_tuple_key': deep_tuple_key,
    'nested_object_arrays': nested_object_arrays,
    'colliding_dict_keys': colliding_dict_keys,
    'colliding_set_items': colliding_set_items,
}
