"""The arrays of an npz archive, inflated with ISA-L where it is installed.

A feature file is a zip of four .npy members, the 1 MB ``feat`` one
deflated. ``np.load`` inflates it with zlib through ``zipfile``'s
streaming reader and checks it with zlib's CRC-32; on a classify worker
that is half of scoring an image. ISA-L (the ``isal`` package) inflates the
same bytes faster and computes the CRC ~20x faster; the archive's own
directory is still read by ``zipfile``, and every member's size and CRC-32
are checked as ``zipfile`` checks them. Members stored any other way
(encrypted, another compression) are read by ``zipfile`` itself, and so is
everything where ``isal`` is not installed.
"""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np

try:  # optional: pip install 'spacer_worker[worker]' brings it
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - depends on the environment
    _inflater = None

_LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature ... name, extra length
_LOCAL_MAGIC = b'PK\x03\x04'
_HEADER_ROOM = 1 << 16  # a .npy header is at most 64 KiB (format 2.0: more, rarely)


def read_member(archive: zipfile.ZipFile, key: str, data: bytes,
                limit: int) -> np.ndarray:
    """The array ``key`` (or ``key.npy``) of the npz archive over ``data``.

    A member that says it inflates to more than ``limit`` bytes (plus a
    header) is read by ``zipfile``'s streaming reader, which stops where
    the .npy header says. Raises what ``np.load`` raises on a damaged
    archive (BadZipFile, ValueError, EOFError, OSError).
    """
    names = set(archive.namelist())
    info = archive.getinfo(key + '.npy' if key + '.npy' in names else key)
    if info.file_size > limit + _HEADER_ROOM:
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    return np.lib.format.read_array(io.BytesIO(_member(archive, info, data)),
                                    allow_pickle=False)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
            data: bytes) -> bytes:
    if _inflater is None or info.flag_bits & 0x1 or info.compress_type \
            not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return archive.read(info)
    offset = info.header_offset
    header = data[offset:offset + _LOCAL_HEADER.size]
    if len(header) != _LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f'truncated local header of {info.filename}')
    magic, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if magic != _LOCAL_MAGIC:
        raise zipfile.BadZipFile(f'bad local header of {info.filename}')
    start = offset + _LOCAL_HEADER.size + name_length + extra_length
    raw = data[start:start + info.compress_size]
    if len(raw) != info.compress_size:
        raise zipfile.BadZipFile(f'{info.filename} is truncated')
    if info.compress_type == zipfile.ZIP_DEFLATED:
        try:
            # Never more than the declared size (checked against the
            # limit by the caller): a lying member cannot inflate further.
            inflater = _inflater.decompressobj(-15)
            raw = inflater.decompress(raw, info.file_size + 1)
        except _inflater.error as e:
            raise zipfile.BadZipFile(f'{info.filename}: {e}') from e
    if len(raw) != info.file_size or \
            _inflater.crc32(raw) & 0xFFFFFFFF != info.CRC:
        raise zipfile.BadZipFile(f'Bad CRC-32 or size for {info.filename}')
    return raw
