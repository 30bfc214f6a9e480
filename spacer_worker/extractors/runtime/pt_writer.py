"""numpy arrays written as a PyTorch ``.pt`` file, without torch.

The demo and the tests write EfficientNet weights that PySpacer itself
loads (``torch.load``, ``weights_only`` on), on hosts without torch. The
file is what ``torch.save({'net': state_dict})`` writes: a zip holding
``archive/data.pkl``, ``archive/byteorder``, ``archive/version`` and one
``archive/data/<key>`` record per tensor, each record's bytes aligned to
64 as torch aligns them. The pickle is emitted opcode by opcode (protocol
2, as torch writes it) because its globals (``torch._utils
._rebuild_tensor_v2``, ``torch.FloatStorage``) cannot be pickled by
reference where torch is not installed. Dates are fixed, so the same
arrays always give the same bytes (and sha256).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

ARCHIVE = 'archive'
ALIGNMENT = 64
_DATE = (1980, 1, 1, 0, 0, 0)

_STORAGE_NAMES = {
    np.dtype('f8'): 'DoubleStorage', np.dtype('f4'): 'FloatStorage',
    np.dtype('f2'): 'HalfStorage', np.dtype('i8'): 'LongStorage',
    np.dtype('i4'): 'IntStorage', np.dtype('i2'): 'ShortStorage',
    np.dtype('i1'): 'CharStorage', np.dtype('u1'): 'ByteStorage',
    np.dtype('?'): 'BoolStorage',
}


class PickleWriter:
    """The few pickle opcodes a tree of dicts, numbers and tensors needs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(b'\x80\x02')  # PROTO 2
        self.storages: list[np.ndarray] = []

    def text(self, value: str) -> None:
        raw = value.encode('utf-8')
        self.out.write(b'X' + struct.pack('<I', len(raw)) + raw)

    def global_(self, module: str, name: str) -> None:
        self.out.write(b'c' + f'{module}\n{name}\n'.encode('ascii'))

    def integer(self, value: int) -> None:
        if -2 ** 31 <= value < 2 ** 31:
            self.out.write(b'J' + struct.pack('<i', value))
        else:
            raw = value.to_bytes(9, 'little', signed=True)
            self.out.write(b'\x8a\x09' + raw)  # LONG1

    def ints(self, values: tuple[int, ...]) -> None:
        self.out.write(b'(')
        for v in values:
            self.integer(int(v))
        self.out.write(b't')

    def ordered_dict(self) -> None:
        self.global_('collections', 'OrderedDict')
        self.out.write(b')R')  # EMPTY_TUPLE, REDUCE

    def tensor(self, array: np.ndarray) -> None:
        array = np.array(array, order='C')  # 0-d stays 0-d
        dtype = array.dtype.newbyteorder('=')
        name = _STORAGE_NAMES.get(dtype)
        if name is None:
            raise TypeError(f'no torch storage for numpy dtype {array.dtype}')
        key = str(len(self.storages))
        self.storages.append(array.astype(dtype.newbyteorder('<')))
        self.tensor_reference(name, key, array.size, 0, array.shape,
                              tuple(_contiguous_strides(array.shape)))

    def tensor_reference(self, storage: str, key: str, numel: int,
                         offset: int, size: tuple[int, ...],
                         stride: tuple[int, ...]) -> None:
        """A tensor over record ``data/<key>``, whatever its numbers say
        (the tests write hostile files with it)."""
        self.global_('torch._utils', '_rebuild_tensor_v2')
        self.out.write(b'((')  # the arguments' tuple, the storage id's
        self.text('storage')
        self.global_('torch', storage)
        self.text(key)
        self.text('cpu')
        self.integer(numel)
        self.out.write(b'tQ')  # TUPLE, BINPERSID
        self.integer(offset)
        self.ints(size)
        self.ints(stride)
        self.out.write(b'\x89')  # requires_grad False
        self.ordered_dict()  # no backward hooks
        self.out.write(b'tR')

    def value(self, value: Any) -> None:
        if isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, Mapping):
            if type(value) is dict:
                self.out.write(b'}')  # EMPTY_DICT, as torch.save's top
            else:
                self.ordered_dict()  # as a state_dict()
            if value:
                self.out.write(b'(')
                for k, v in value.items():
                    self.text(str(k))
                    self.value(v)
                self.out.write(b'u')  # SETITEMS
        elif isinstance(value, bool):
            self.out.write(b'\x88' if value else b'\x89')
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, float):
            self.out.write(b'G' + struct.pack('>d', value))
        elif isinstance(value, str):
            self.text(value)
        else:
            raise TypeError(f'cannot write a {type(value).__name__} to a '
                            f'.pt file')

    def finish(self) -> bytes:
        self.out.write(b'.')
        return self.out.getvalue()


def _contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return strides[::-1]


def _add(archive: zipfile.ZipFile, out: io.BytesIO, name: str,
         data: bytes) -> None:
    info = zipfile.ZipInfo(f'{ARCHIVE}/{name}', date_time=_DATE)
    info.compress_type = zipfile.ZIP_STORED
    # Pad the local header's extra field so the data starts on a multiple
    # of 64 (torch aligns records so that they can be memory-mapped).
    start = out.tell() + 30 + len(info.filename.encode('utf-8')) + 4
    pad = -start % ALIGNMENT
    info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
    archive.writestr(info, data)


def archive_bytes(pickled: bytes, records: Mapping[str, bytes]) -> bytes:
    """A torch zip archive of ``data.pkl`` and ``data/<key>`` records."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as archive:
        _add(archive, out, 'data.pkl', pickled)
        _add(archive, out, 'byteorder', b'little')
        for key, data in records.items():
            _add(archive, out, f'data/{key}', data)
        _add(archive, out, 'version', b'3\n')
    return out.getvalue()


def save(tree: Mapping[str, Any]) -> bytes:
    """The bytes of a ``.pt`` file holding ``tree`` (dicts of str keys,
    numpy arrays, numbers, text), as ``torch.save`` would write it."""
    writer = PickleWriter()
    writer.value(tree)
    pickled = writer.finish()
    return archive_bytes(pickled, {str(key): storage.tobytes() for key,
                                   storage in enumerate(writer.storages)})
