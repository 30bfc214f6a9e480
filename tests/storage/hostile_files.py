"""Small files that declare huge allocations, one per reader, and a way to
measure what reading one costs (peak RSS of a fresh subprocess)."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tiff_tile_bomb(tile: int = 8192, size: int = 64) -> bytes:
    """An RGB TIFF of size x size pixels that declares one tile x tile
    tile, deflated: a few hundred KB that libtiff inflates to tile^2 x 3."""
    data = zlib.compress(bytes(tile * tile * 3), 9)
    entries = [  # tag, type, count, value (SHORT=3, LONG=4)
        (256, 4, 1, size), (257, 4, 1, size), (258, 3, 3, None),
        (259, 3, 1, 8), (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1),
        (322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, None),
        (325, 4, 1, len(data))]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    bits_at, data_at = extra_at, extra_at + 6
    out = bytearray(b'II*\x00' + struct.pack('<I', ifd_at))
    out += struct.pack('<H', len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag == 324:
            value = data_at
        fmt = '<HHIHH' if kind == 3 and count == 1 else '<HHII'
        out += struct.pack(fmt, tag, kind, count, value,
                           0) if fmt == '<HHIHH' else struct.pack(
                               fmt, tag, kind, count, value)
    out += struct.pack('<I', 0)
    out += struct.pack('<HHH', 8, 8, 8)
    out += data
    return bytes(out)


def json_feature_bomb(count: int = 4_000_000) -> bytes:
    """Legacy JSON features: millions of empty vectors, ~3 bytes each in
    the file and ~64 each as Python lists."""
    return b'[' + b'[],' * (count - 1) + b'[]]'


def json_wide_features(points: int = 200, dim: int = 20_000) -> bytes:
    """Legacy JSON features whose float32 array is points x dim x 4."""
    row = '[' + ','.join(['0'] * dim) + ']'
    return ('[' + ','.join([row] * points) + ']').encode()


class _ZeroSizeArray:
    """Pickles as numpy does an array: S0 dtype, 10^12 elements, no data."""

    def __reduce__(self):
        import numpy as np
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b'b'),
                (1, (10 ** 6, 10 ** 6), np.dtype('S0'), False, b''))


def zero_size_pickle() -> bytes:
    return pickle.dumps(_ZeroSizeArray(), protocol=2)


def pt_zero_stride_tensors(tensors: int = 4, elements: int = 1 << 24
                           ) -> bytes:
    """Weights whose tensors all view one 4-byte storage through zero
    strides: each builds ``elements`` float32 values from nothing."""
    from spacer_worker.extractors.runtime import pt_writer

    writer = pt_writer.PickleWriter()
    writer.out.write(b'}(')
    writer.text('net')
    writer.out.write(b'}(')
    for n in range(tensors):
        writer.text(f't{n}')
        writer.tensor_reference('FloatStorage', '0', 1, 0, (elements,), (0,))
    writer.out.write(b'uu')
    return pt_writer.archive_bytes(writer.finish(), {'0': bytes(4)})


def pt_deflated_storage(elements: int = 1 << 26) -> bytes:
    """Weights with one storage deflated in the archive: a few hundred KB
    that inflate to ``elements`` x 4 bytes."""
    import zipfile

    from spacer_worker.extractors.runtime import pt_writer

    writer = pt_writer.PickleWriter()
    writer.out.write(b'}(')
    writer.text('net')
    writer.out.write(b'}(')
    writer.text('a')
    writer.tensor_reference('FloatStorage', '0', elements, 0, (elements,),
                            (1,))
    writer.out.write(b'uu')
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z:
        z.writestr('archive/data.pkl', writer.finish())
        z.writestr('archive/byteorder', b'little')
        z.writestr('archive/data/0', bytes(elements * 4),
                   compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


MEASURE = r'''
import json, os, resource, sys
sys.path.insert(0, os.environ['REPO'])
import importlib
module, name = sys.argv[1].split(':')
fn = getattr(importlib.import_module(module), name)
data = open(sys.argv[2], 'rb').read()
# What the readers import lazily, loaded before the baseline.
import numpy, PIL.Image, PIL.TiffImagePlugin, PIL.JpegImagePlugin, zipfile
from spacer_worker import config
from spacer_worker.storage import features, image_memory, pickle_allowlist
config.get('MAX_IMAGE_PIXELS')
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
error = None
try:
    fn(data)
except Exception as e:
    error = type(e).__name__
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({'error': error, 'peak_mb': (after - before) / 1024}))
'''


def cost_of_reading(reader: str, data: bytes, tmp: Path,
                    env: dict | None = None) -> dict:
    """Run ``reader`` ('module:function' taking bytes) on ``data`` in a
    fresh interpreter; its error class and how much its peak RSS grew
    (MB) over the interpreter with the readers' imports loaded."""
    path = tmp / 'hostile.bin'
    path.write_bytes(data)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith('SPACER_')}
    out = subprocess.run(
        [sys.executable, '-c', MEASURE, reader, str(path)],
        env={**clean, 'REPO': str(REPO), **(env or {})},
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
