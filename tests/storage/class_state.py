"""A fingerprint of every class and function a classifier pickle may name.

A refused pickle must leave the process as it found it; comparing
:func:`snapshot` before and after shows it did. For each allowlisted
class, every class in its MRO is covered attribute by attribute
(functions by identity, code, defaults and ``__dict__``; containers by
their items), plus the allowlisted functions themselves and numpy's
built-in dtype singletons.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from spacer_worker.storage.pickle_allowlist import allowed_objects

_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4',
           'f8', 'c8', 'c16', 'O', 'U', 'S', 'V')


def _function(fn: types.FunctionType) -> tuple:
    return ('function', id(fn), fn.__code__, fn.__defaults__,
            dict(fn.__kwdefaults__ or {}), dict(fn.__dict__),
            fn.__qualname__)


def fingerprint(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return (type(value).__name__, fingerprint(value.__func__))
    if isinstance(value, property):
        return ('property', *(fingerprint(f) for f in (
            value.fget, value.fset, value.fdel)))
    if isinstance(value, types.FunctionType):
        return _function(value)
    if isinstance(value, dict):
        return ('dict', id(value), tuple((k, id(v)) for k, v in value.items()))
    if isinstance(value, (list, set, frozenset, tuple)):
        return (type(value).__name__, id(value), tuple(map(id, value)))
    return ('value', id(value), type(value))


def snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {}
    for obj in allowed_objects():
        if isinstance(obj, type):
            for cls in obj.__mro__:
                state[f'{cls.__module__}.{cls.__qualname__}'] = {
                    name: fingerprint(value)
                    for name, value in vars(cls).items()}
        else:
            state[f'{obj.__module__}.{obj.__qualname__}'] = fingerprint(obj)
            if hasattr(obj, '__dict__'):
                state[f'{obj.__module__}.{obj.__qualname__}.__dict__'] = {
                    name: fingerprint(value)
                    for name, value in vars(obj).items()}
    for code in _DTYPES:
        dtype = np.dtype(code)
        state[f'dtype {code}'] = (id(dtype), dtype.__reduce__(), dtype.flags,
                                  dtype.itemsize, dtype.alignment,
                                  dtype.byteorder, dtype.isbuiltin)
    return state


def changes(before: dict, after: dict) -> list[str]:
    """Names whose fingerprint differs (empty when nothing changed)."""
    out = [name for name in before.keys() | after.keys()
           if before.get(name) != after.get(name)]
    for name in list(out):
        old, new = before.get(name), after.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            out.extend(f'{name}.{key}' for key in old.keys() | new.keys()
                       if old.get(key) != new.get(key))
    return sorted(out)
