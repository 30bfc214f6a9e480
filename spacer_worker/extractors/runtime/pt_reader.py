"""PyTorch ``.pt`` files read into numpy arrays, without torch.

A CPU worker needs PySpacer's weights (``torch.save({'net': state_dict})``)
but none of torch's 750 MB. The file is a zip: ``<name>/data.pkl`` (a
pickle of the object tree, whose tensors point at storages by key),
``<name>/data/<key>`` (each storage's raw bytes) and ``<name>/byteorder``.
This module reads that format with the refusals of
``torch.load(weights_only=True)``, the loader it stands in for:

* the pickle may name only the globals a state dict needs (tensors, their
  storage types, ``OrderedDict``, numpy scalars as PySpacer's training
  scripts save them); anything else is refused before it is called, so a
  file cannot run code;
* every tensor's size, stride and offset must lie inside its storage, and
  every storage's byte count must be exactly its element count times its
  item size;
* element counts are bounded (:data:`MAX_ELEMENTS`), so a tensor that
  repeats one value through zero strides cannot claim terabytes;
* every storage is stored uncompressed (as torch writes it), so it holds
  no more bytes than the file itself, and the storages of one file and the
  tensors built from them each stay within WEIGHTS_MAX_TENSOR_BYTES (a
  file of many zero-stride tensors could otherwise build gigabytes from a
  few stored bytes). ``load(..., materialize=False)`` applies all of this
  without building anything: the check before ``torch.load``.

Every failure is a :class:`PtFormatError` saying what is wrong. The legacy
(pre-1.6) non-zip format is refused: re-save such a file with torch.
"""

from __future__ import annotations

import functools
import io
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np

# Elements in all tensors of one file: EfficientNet-b0 holds 6.6 M,
# VGG16 138 M; 2^28 (1 GiB of float32) leaves room for custom networks.
MAX_ELEMENTS = 2 ** 28
# Bytes of all storages of one file (bfloat16 and float64 included).
MAX_STORAGE_BYTES = 2 ** 31

# torch's storage type names and what their bytes hold. bfloat16 has no
# numpy type: read as uint16 and widened to float32 exactly.
STORAGE_DTYPES = {
    'DoubleStorage': np.dtype('f8'), 'FloatStorage': np.dtype('f4'),
    'HalfStorage': np.dtype('f2'), 'BFloat16Storage': np.dtype('u2'),
    'LongStorage': np.dtype('i8'), 'IntStorage': np.dtype('i4'),
    'ShortStorage': np.dtype('i2'), 'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'), 'BoolStorage': np.dtype('?'),
}
# What zipfile raises on damaged archives, beside BadZipFile.
_ZIP_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError,
               RuntimeError, NotImplementedError, zlib.error, struct.error,
               OverflowError)
# numpy scalar types a file may carry beside the state dict (epoch, acc).
SCALAR_KINDS = 'biuf'


class PtFormatError(ValueError):
    """The bytes are not a PyTorch file this reader loads safely."""


class _Sealed:
    """An object the pickle makes but may not change (``BUILD`` on it is
    refused: that would set its attributes to anything)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise PtFormatError(
            f'the pickle sets the state of a {type(self).__name__}')


class StorageType(_Sealed):
    __slots__ = ('name',)

    def __init__(self, name: str):
        self.name = name  # 'FloatStorage'...


class Storage(_Sealed):
    __slots__ = ('array', 'bfloat16')

    def __init__(self, array: np.ndarray, bfloat16: bool):
        self.array = array  # 1-D, native byte order
        self.bfloat16 = bfloat16


class Tensor(_Sealed):
    """A rebuilt tensor, held until the whole pickle is read."""

    __slots__ = ('array',)

    def __init__(self, array: np.ndarray):
        self.array = array


class ScalarType:
    """A numpy dtype named in the pickle; only its byte order may be set."""

    __slots__ = ('code', 'order')

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str):
            raise PtFormatError(f'numpy dtype {code!r} is not a type code')
        try:
            dtype = np.dtype(code)
        except TypeError as e:
            raise PtFormatError(f'unknown numpy dtype {code!r}') from e
        if dtype.kind not in SCALAR_KINDS or dtype.fields is not None:
            raise PtFormatError(f'numpy dtype {code!r} is not a number type')
        self.code = dtype.str.lstrip('<>|=')
        self.order = '<'

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, ...); the rest is
        # implied by the code.
        if not (isinstance(state, tuple) and len(state) > 1
                and state[1] in ('<', '>', '|', '=')):
            raise PtFormatError(f'malformed numpy dtype state {state!r}')
        self.order = '<' if state[1] == '=' else state[1]

    def dtype(self) -> np.dtype:
        return np.dtype(self.order.replace('|', '<') + self.code)


def _scalar(kind: Any, data: Any) -> Any:
    if not isinstance(kind, ScalarType) or not isinstance(data, bytes):
        raise PtFormatError('malformed numpy scalar in the pickle')
    dtype = kind.dtype()
    if len(data) != dtype.itemsize:
        raise PtFormatError(f'a numpy {dtype} scalar of {len(data)} bytes')
    return np.frombuffer(data, dtype)[0].astype(dtype.newbyteorder('='))


def _encode(text: Any, encoding: Any = 'utf-8') -> bytes:
    # How protocol-2 pickles spell bytes: codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise PtFormatError('codecs.encode is allowed for latin1 text only')
    return text.encode('latin1')


def _ordered_dict(*args: Any) -> OrderedDict:
    if args:  # torch writes OrderedDict() and fills it with SETITEMS
        raise PtFormatError('OrderedDict built from arguments')
    return OrderedDict()


def _bounded_count(size: tuple[int, ...]) -> int:
    count = 1
    for n in size:
        count *= n
        if count > MAX_ELEMENTS:
            raise PtFormatError(
                f'a tensor of size {list(size)} holds more than '
                f'{MAX_ELEMENTS} elements')
    return count


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
            type(v) is int and v >= 0 for v in value):
        raise PtFormatError(f'tensor {what} {value!r} is not a tuple of '
                            f'non-negative integers')
    return value


class _Budget:
    """Bytes the tensors of one file may still build
    (WEIGHTS_MAX_TENSOR_BYTES): zero strides let each tensor repeat one
    stored value, so the storages' size alone bounds nothing."""

    def __init__(self, limit: int, materialize: bool = True) -> None:
        self.limit = self.left = limit
        self.materialize = materialize

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise PtFormatError(
                f'{what} takes the tensors of this file over the '
                f'WEIGHTS_MAX_TENSOR_BYTES limit of {self.limit} bytes')


def _rebuild_tensor(budget: _Budget, storage: Any, offset: Any, size: Any,
                    stride: Any, requires_grad: Any = False, hooks: Any = None,
                    metadata: Any = None) -> Tensor:
    if not isinstance(storage, Storage):
        raise PtFormatError('a tensor without a storage')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise PtFormatError(f'tensor offset {offset!r}, size {list(size)}, '
                            f'stride {list(stride)} do not fit together')
    if hooks or metadata or not isinstance(requires_grad, bool):
        raise PtFormatError('a tensor with hooks or metadata')
    count = _bounded_count(size)
    available = storage.array.size
    if count:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= available:
            raise PtFormatError(
                f'a tensor of size {list(size)}, stride {list(stride)} at '
                f'offset {offset} reaches element {last} of a storage of '
                f'{available}')
    itemsize = storage.array.itemsize
    budget.charge(count * (4 if storage.bfloat16 else itemsize),
                  f'a tensor of size {list(size)}')
    if not budget.materialize:
        return Tensor(storage.array[:0])
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:] if count else storage.array[:0],
        shape=size, strides=[s * itemsize for s in stride], writeable=False)
    array = np.array(view)  # own, contiguous memory
    if storage.bfloat16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return Tensor(array)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       hooks: Any = None) -> Tensor:
    if not isinstance(data, Tensor) or hooks:
        raise PtFormatError('a parameter without a tensor, or with hooks')
    return data


GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): _ordered_dict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('numpy', 'dtype'): ScalarType,
    ('numpy.core.multiarray', 'scalar'): _scalar,
    ('numpy._core.multiarray', 'scalar'): _scalar,
    ('_codecs', 'encode'): _encode,
    ('codecs', 'encode'): _encode,
    **{('torch', name): StorageType(name) for name in STORAGE_DTYPES},
}


class _Callable(_Sealed):
    """A global as the pickle sees it: callable, but not itself (a BUILD
    on a module-level function or class would change it for every later
    file this process reads)."""

    __slots__ = ('fn',)

    def __init__(self, fn: Any):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive, budget: _Budget):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._budget = budget
        self._storages: dict[str, tuple[StorageType, Storage]] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = GLOBALS.get((module, name))
        if found is None:
            raise PtFormatError(
                f'the pickle names {module}.{name}, which weights_only '
                f'loading does not allow (it could run code)')
        if found is _rebuild_tensor:
            return _Callable(functools.partial(found, self._budget))
        return found if isinstance(found, StorageType) else _Callable(found)

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5
                and pid[0] == 'storage' and isinstance(pid[1], StorageType)
                and isinstance(pid[2], str) and isinstance(pid[3], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise PtFormatError(f'malformed storage reference {pid!r}'[:200])
        kind, key, numel = pid[1], pid[2], pid[4]
        known = self._storages.get(key)
        if known is not None:
            if known[0] != kind or known[1].array.size != numel:
                raise PtFormatError(f'storage {key!r} is named with two types')
            return known[1]
        storage = self._archive.storage(kind, key, numel)
        self._storages[key] = (kind, storage)
        return storage


class _Archive:
    def __init__(self, data: bytes, max_bytes: int = MAX_STORAGE_BYTES):
        self.data = data
        self.max_bytes = max_bytes
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zip.infolist()
        except _ZIP_ERRORS as e:
            raise PtFormatError(
                'not a zip archive (torch.save writes one since torch 1.6; '
                'older files must be re-saved)') from e
        if not infos:
            raise PtFormatError('an empty zip archive')
        # torch's reader: every record sits under the first one's folder.
        self.prefix = infos[0].filename.split('/', 1)[0] + '/'
        self._records = {i.filename: i for i in infos}
        self._storage_bytes = 0
        order = self.record('byteorder', 16, required=False)
        if order not in (None, b'little', b'big'):
            raise PtFormatError(f'byte order {order!r}'[:80])
        self.order = '>' if order == b'big' else '<'

    def record(self, name: str, limit: int, required: bool = True
               ) -> bytes | None:
        info = self._records.get(self.prefix + name)
        if info is None:
            if required:
                raise PtFormatError(f'the archive has no {name} record')
            return None
        if info.file_size > limit:
            raise PtFormatError(f'record {name} is {info.file_size} bytes, '
                                f'over the limit of {limit}')
        try:
            with self._zip.open(info) as f:
                data = f.read(limit + 1)
        except _ZIP_ERRORS as e:
            raise PtFormatError(
                f'record {name} cannot be read: {e}'[:200]) from e
        if len(data) != info.file_size:
            raise PtFormatError(f'record {name} is truncated')
        return data

    def storage(self, kind: StorageType, key: str, numel: int) -> Storage:
        dtype = STORAGE_DTYPES[kind.name]
        nbytes = numel * dtype.itemsize
        limit = min(MAX_STORAGE_BYTES, self.max_bytes)
        if self._storage_bytes + nbytes > limit:
            raise PtFormatError(
                f'storage {key!r} of {numel} elements takes the storages of '
                f'this file over {limit} bytes (WEIGHTS_MAX_TENSOR_BYTES)')
        info = self._records.get(self.prefix + f'data/{key}')
        if info is not None and (info.compress_type != zipfile.ZIP_STORED
                                 or info.file_size > len(self.data)):
            # torch.save stores storages as they are: a compressed one
            # could inflate far past the file's own size.
            raise PtFormatError(
                f'storage {key!r} is compressed in the archive; torch '
                f'stores storages uncompressed, so it holds no more bytes '
                f'than the file')
        data = self.record(f'data/{key}', nbytes)
        if len(data) != nbytes:
            raise PtFormatError(
                f'storage {key!r} holds {len(data)} bytes, not the '
                f'{nbytes} of {numel} elements of {kind.name}')
        self._storage_bytes += nbytes
        array = np.frombuffer(data, dtype.newbyteorder(self.order))
        if self.order != '<' and dtype.itemsize > 1:
            array = array.astype(dtype.newbyteorder('='))
        return Storage(array, bfloat16=kind.name == 'BFloat16Storage')


# The opcodes a state dict's pickle is written with (protocols 2-4), as
# torch's weights_only unpickler accepts them: no out-of-band buffers,
# bytearrays, extension registry or old-style instances.
OPCODES = frozenset({
    'PROTO', 'FRAME', 'STOP', 'MARK', 'POP', 'POP_MARK', 'DUP',
    'GLOBAL', 'STACK_GLOBAL', 'REDUCE', 'BUILD', 'NEWOBJ',
    'BINPERSID', 'PERSID',
    'EMPTY_TUPLE', 'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3',
    'EMPTY_LIST', 'APPEND', 'APPENDS', 'LIST',
    'EMPTY_DICT', 'DICT', 'SETITEM', 'SETITEMS',
    'PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE', 'GET', 'BINGET', 'LONG_BINGET',
    'NONE', 'NEWTRUE', 'NEWFALSE', 'INT', 'BININT', 'BININT1', 'BININT2',
    'LONG', 'LONG1', 'LONG4', 'FLOAT', 'BINFLOAT',
    'UNICODE', 'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8',
    'SHORT_BINBYTES', 'BINBYTES', 'BINBYTES8',
})
# data.pkl of EfficientNet-b0 is 30 KB; checking each opcode costs ~1 us.
PICKLE_LIMIT = 4 << 20


def _check_opcodes(pickled: bytes) -> None:
    try:
        for opcode, _arg, _pos in pickletools.genops(pickled):
            if opcode.name not in OPCODES:
                raise PtFormatError(
                    f'the pickle uses the {opcode.name} opcode, which '
                    f'weights_only loading does not allow')
    except PtFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is the same
        raise PtFormatError(f'the pickle is malformed: {e}'[:200]) from e


def load(data: bytes, pickle_limit: int = PICKLE_LIMIT,
         materialize: bool = True) -> Any:
    """The object tree of a ``.pt`` file, its tensors as numpy arrays.

    With ``materialize=False``, only checks: every refusal and bound is
    applied, but tensors are left empty (a check before torch.load).
    """
    from spacer_worker import config

    limit = config.get('WEIGHTS_MAX_TENSOR_BYTES')
    archive = _Archive(data, limit)
    pickled = archive.record('data.pkl', pickle_limit)
    _check_opcodes(pickled)
    unpickler = _Unpickler(pickled, archive, _Budget(limit, materialize))
    try:
        tree = unpickler.load()
    except PtFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError,
            AttributeError, IndexError, KeyError, RecursionError,
            MemoryError, OverflowError) as e:
        raise PtFormatError(f'the pickle is malformed: '
                            f'{type(e).__name__}: {e}'[:300]) from e
    return _plain(tree, [MAX_NODES])


# Objects visited when the tree is rebuilt: a pickle may refer to one list
# many times, and a few hundred bytes can so describe 2^32 paths.
MAX_NODES = 1_000_000


def _plain(value: Any, budget: list[int], depth: int = 0) -> Any:
    """Tensors as arrays; containers rebuilt as plain ones."""
    budget[0] -= 1
    if budget[0] < 0 or depth > 32:
        raise PtFormatError('the object tree is too large or nests too deep')
    if isinstance(value, Tensor):
        return value.array
    if isinstance(value, dict):
        return {k: _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, budget, depth + 1) for v in value)
    if isinstance(value, (StorageType, Storage, ScalarType)):
        raise PtFormatError(f'a bare {type(value).__name__} in the tree')
    return value
