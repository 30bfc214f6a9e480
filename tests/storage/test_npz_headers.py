""".npy headers read by one match where they are plain, by numpy's
parser otherwise: the same arrays either way."""

from __future__ import annotations

import io

import numpy as np
import pytest

from spacer_worker.storage import npz


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, version=version)
    return out.getvalue()


ARRAYS = {
    'feat': np.arange(200 * 1280, dtype=np.float32).reshape(200, 1280),
    'rows': np.arange(7, dtype=np.uint16),
    'meta': np.array([1, 200, 1280], np.int64),
    'scalar': np.array(5, dtype='>i8'),
    'fortran': np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    'empty': np.zeros((0, 1280), np.float32),
    'bool': np.array([True, False]),
}


@pytest.mark.parametrize('name', sorted(ARRAYS))
def test_plain_headers_read_as_numpy_reads_them(name):
    array = ARRAYS[name]
    raw = _npy(array)
    quick = npz._quick_header(raw)
    assert quick is not None  # what numpy writes is the plain form
    stream = io.BytesIO(raw)
    np.lib.format.read_magic(stream)
    assert quick[:3] == np.lib.format.read_array_header_1_0(stream)
    assert quick[3] == stream.tell()
    view = npz._array_view(raw, name, 10 ** 8)
    assert view.dtype == array.dtype and np.array_equal(view, array)


def test_other_headers_go_to_numpys_parser():
    array = ARRAYS['rows']
    # Version 2.0, and a 1.0 header spelled another way: numpy's parser.
    assert npz._quick_header(_npy(array, (2, 0))) is None
    raw = bytearray(_npy(array))
    raw[10:12] = b'{ '
    assert npz._quick_header(bytes(raw)) is None
    spaced = _npy(array).replace(b"{'descr'", b"{'descr' ", 1)[:-1]
    assert npz._quick_header(spaced) is None


def test_an_object_header_is_refused_either_way():
    raw = _npy(ARRAYS['rows']).replace(b"'<u2'", b"'|O' ", 1)
    with pytest.raises(npz.UnusualMember, match='Python objects'):
        npz._array_view(raw, 'rows', 10 ** 8)
