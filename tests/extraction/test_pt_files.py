"""PyTorch weight files read and written without torch, held against
``torch.load(weights_only=True)``: a file that loads in one loads in the
other with the same values, and both refuse the same hostile files."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacer_worker.exceptions import WeightsLoadError
from spacer_worker.extractors.runtime import pt_reader, pt_writer
from spacer_worker.extractors.runtime import weights as weights_mod
from tests.extraction.conftest import needs_torch


def _weights(data: bytes) -> weights_mod.Weights:
    return weights_mod.Weights(data, weights_mod.sha256_of(data), False)


@pytest.fixture(params=['numpy', 'torch'])
def load(request) -> Callable[[bytes], dict]:
    """Each loader: pt_reader (CPU workers), torch.load (TorchExtractor)."""
    if request.param == 'torch':
        needs_torch()
        return lambda data: weights_mod.load_state_dict(_weights(data), 'w.pt')
    return lambda data: weights_mod.load_arrays(_weights(data), 'w.pt')


def _one_tensor(numel: int, offset: int, size: tuple, stride: tuple,
                nbytes: int | None = None, records: bool = True) -> bytes:
    """{'net': {'a': tensor}} whose numbers say whatever they are given."""
    writer = pt_writer.PickleWriter()
    writer.out.write(b'}(')  # {'net': {'a': ...}}
    writer.text('net')
    writer.out.write(b'}(')
    writer.text('a')
    writer.tensor_reference('FloatStorage', '0', numel, offset, size, stride)
    writer.out.write(b'uu')
    data = b'\1' * (numel * 4 if nbytes is None else nbytes)
    return pt_writer.archive_bytes(writer.finish(),
                                   {'0': data} if records else {})


class _Evil:
    def __reduce__(self):
        return (print, ('pwned',))


def _truncated() -> bytes:
    good = pt_writer.save({'net': {'a': np.ones(64, np.float32)}})
    return good[:len(good) // 2]


HOSTILE = {
    'size beyond its storage': lambda: _one_tensor(4, 0, (5,), (1,)),
    'offset beyond its storage': lambda: _one_tensor(4, 3, (2,), (1,)),
    'negative stride': lambda: _one_tensor(4, 3, (2,), (-1,)),
    'negative offset': lambda: _one_tensor(4, -1, (2,), (1,)),
    'negative size': lambda: _one_tensor(4, 0, (-2,), (1,)),
    'storage shorter than its count': lambda: _one_tensor(4, 0, (4,), (1,),
                                                          nbytes=8),
    'storage longer than its count': lambda: _one_tensor(4, 0, (4,), (1,),
                                                         nbytes=32),
    'storage record missing': lambda: _one_tensor(4, 0, (4,), (1,),
                                                  records=False),
    'a count of 2^40 elements': lambda: _one_tensor(2 ** 40, 0, (2,), (1,),
                                                    nbytes=16),
    # torch.load itself accepts this view; both loaders bound it.
    'zero strides claiming 2^40 elements': lambda: _one_tensor(
        4, 0, (2 ** 20, 2 ** 20), (0, 0)),
    'code in the pickle': lambda: pt_writer.archive_bytes(
        pickle.dumps({'net': {}, 'x': _Evil()}, protocol=2), {}),
    # BUILD on a global: it would change the function for later files.
    'state set on a global': lambda: pt_writer.archive_bytes(
        b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\n'
        b'}X\x01\x00\x00\x00xK\x01sb.', {}),
    'not a zip': lambda: b'this is not a torch file' * 10,
    'truncated': _truncated,
}


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_files_are_refused_by_both_loaders(load, name):
    # Given a weights file built to hurt the worker that reads it,
    data = HOSTILE[name]()
    # then either loader refuses it with the one typed error.
    with pytest.raises(WeightsLoadError):
        load(data)


def test_a_file_within_bounds_loads_in_both(load):
    # The crafted files above fail for their flaw alone: sound numbers
    # (a 2x2 view over 4 floats) load.
    state = load(_one_tensor(4, 0, (2, 2), (1, 2)))  # transposed
    expected = np.frombuffer(b'\1' * 16, '<f4').reshape(2, 2).T
    np.testing.assert_array_equal(np.asarray(state['a']), expected)


def test_the_numpy_loader_names_what_it_refused(caplog):
    data = HOSTILE['size beyond its storage']()
    with pytest.raises(WeightsLoadError, match='not a PyTorch file'):
        weights_mod.load_arrays(_weights(data), 'w.pt')
    with pytest.raises(pt_reader.PtFormatError, match='reaches element 4 of '
                                                      'a storage of 4'):
        pt_reader.load(data)
    with pytest.raises(pt_reader.PtFormatError, match=r'print, which weights_only'):
        pt_reader.load(HOSTILE['code in the pickle']())
    with pytest.raises(pt_reader.PtFormatError, match='sets the state'):
        pt_reader.load(HOSTILE['state set on a global']())
    assert not hasattr(pt_reader._rebuild_tensor, 'x')


def _torch_saved_files() -> dict[str, bytes]:
    """What torch.save writes for weights, several ways."""
    torch = needs_torch()
    from spacer_worker.extractors.runtime.network import EfficientNetB0

    torch.manual_seed(0)
    net = EfficientNetB0()
    state = net.state_dict()
    base = torch.arange(24, dtype=torch.float32)
    extra = OrderedDict([
        ('transposed', base.reshape(4, 6).t()),     # strides (1, 6)
        ('view_at_offset', base[5:11]),               # shares a storage
        ('float64', torch.randn(5, dtype=torch.float64)),
        ('float16', torch.randn(5).half()),
        ('bfloat16', torch.randn(5).bfloat16()),
        ('int32', torch.arange(5, dtype=torch.int32)),
        ('bool', torch.tensor([True, False])),
        ('scalar', torch.tensor(2.5)),
        ('empty', torch.zeros(0, 3)),
    ])
    files = {}
    for name, tree in {
        'state_dict': {'net': state},
        'data_parallel_with_numpy_scalars': {
            'net': OrderedDict((f'module.{k}', v) for k, v in state.items()),
            'epoch': np.int64(30), 'acc': np.float64(0.5)},
        'parameters': {'net': dict(net.named_parameters())},
        'views_and_dtypes': {'net': extra},
    }.items():
        buffer = io.BytesIO()
        torch.save(tree, buffer)
        files[name] = buffer.getvalue()
    return files


def test_files_torch_writes_load_the_same_without_torch():
    torch = needs_torch()
    for name, data in _torch_saved_files().items():
        # Given a file torch.save wrote,
        # when both loaders read it,
        ours = weights_mod.load_arrays(_weights(data), name)
        theirs = weights_mod.load_state_dict(_weights(data), name)
        # then they hold the same names, shapes and values (bfloat16 is
        # widened to float32 exactly, as load_state_dict would copy it).
        assert list(ours) == list(theirs), name
        for key, tensor in theirs.items():
            expected = (tensor.float() if tensor.dtype == torch.bfloat16
                        else tensor).detach().numpy()
            assert ours[key].dtype == expected.dtype, (name, key)
            np.testing.assert_array_equal(ours[key], expected,
                                          err_msg=f'{name}: {key}')


def test_files_we_write_are_what_torch_save_writes():
    torch = needs_torch()
    from spacer_worker.extractors.runtime.calibration import random_state
    from spacer_worker.extractors.runtime.network import EfficientNetB0

    # Given a state dict written without torch,
    state = random_state(seed=5)
    data = pt_writer.save({'net': state})
    # torch.load with weights_only reads it back as written,
    loaded = torch.load(io.BytesIO(data), weights_only=True)
    assert isinstance(loaded['net'], OrderedDict)
    assert list(loaded['net']) == list(EfficientNetB0().state_dict())
    for key, array in state.items():
        assert loaded['net'][key].dtype == torch.from_numpy(array).dtype
        np.testing.assert_array_equal(loaded['net'][key].numpy(), array)
    # PyTorch's EfficientNet takes it strictly, and our reader reads it.
    EfficientNetB0().load_state_dict(loaded['net'])
    again = pt_reader.load(data)['net']
    assert all(np.array_equal(again[k], v) for k, v in state.items())
    # Records are aligned as torch aligns them (memory-mappable).
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        assert start % 64 == 0, info.filename
    # And the same arrays give the same bytes.
    assert pt_writer.save({'net': random_state(seed=5)}) == data


def _small_file() -> tuple[bytes, dict[str, bytes]]:
    writer = pt_writer.PickleWriter()
    writer.value({'net': OrderedDict(
        [('a', np.arange(6, dtype=np.float32).reshape(2, 3)),
         ('b', np.array(3, np.int64))]), 'epoch': 2, 'note': 'text'})
    return writer.finish(), {str(k): s.tobytes()
                             for k, s in enumerate(writer.storages)}


_PICKLE, _RECORDS = _small_file()
_SMALL = pt_writer.archive_bytes(_PICKLE, _RECORDS)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 10 ** 6),
                                         st.integers(0, 255)),
                               min_size=1, max_size=6))
def test_damaged_files_fail_with_the_typed_error_only(in_pickle, flips):
    # Given a small weights file with a few bytes changed, in the archive
    # (CRCs catch most) or in its pickle (the archive rebuilt around it),
    data = bytearray(_PICKLE if in_pickle else _SMALL)
    for where, value in flips:
        data[where % len(data)] = value
    if in_pickle:
        data = pt_writer.archive_bytes(bytes(data), _RECORDS)
    # when a worker reads it, it loads or fails with WeightsLoadError,
    # never another exception.
    try:
        state = weights_mod.load_arrays(_weights(bytes(data)), 'w.pt')
    except WeightsLoadError:
        return
    assert all(isinstance(v, np.ndarray) for v in state.values())
