"""Mutated classifier pickles: only ClassifierLoadError, and no side effect.

Starting from real classifiers (SGD, MLP, MLP with a SeedSequence;
pickle protocols 0, 2, 4 and 5), hypothesis flips bytes, inserts and
deletes opcodes, truncates, splices, and swaps globals for other allowed or forbidden names, one to three
mutations at a time. Whatever comes out, loading it either gives a
CalibratedClassifierCV or raises ClassifierLoadError, and every
allowlisted class, function and dtype singleton is unchanged.

The default example count keeps the suite fast; a long run:
``SPACER_FUZZ_EXAMPLES=20000 python3 -m pytest tests/storage/test_pickle_fuzz.py``
(random seeds then; the short run is derandomized so CI is stable).
"""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.calibration import CalibratedClassifierCV

from spacer_worker.exceptions import ClassifierLoadError
from spacer_worker.storage.classifiers import dump_classifier, parse_classifier
from spacer_worker.storage.pickle_allowlist import entries

from .class_state import changes, snapshot
from .test_classifiers import train

EXAMPLES = int(os.environ.get('SPACER_FUZZ_EXAMPLES', '300'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize='SPACER_FUZZ_EXAMPLES' not in os.environ,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

FORBIDDEN_GLOBALS = [
    ('os', 'system'), ('builtins', 'eval'), ('builtins', 'getattr'),
    ('builtins', 'range'), ('builtins', 'setattr'), ('numpy', 'load'),
    ('sklearn.utils', 'Bunch'), ('copyreg', '__newobj__'),
    ('sklearn.base', 'clone'), ('functools', 'partial'),
]
OPCODES = sorted({op.code.encode('latin1') for op in pickletools.opcodes})


def _seeded_mlp() -> CalibratedClassifierCV:
    # Its RandomState carries a SeedSequence (Cython's pickle format).
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    from .test_classifiers import data
    x, y = data()
    mlp = MLPClassifier(hidden_layer_sizes=(4,),
                        random_state=np.random.RandomState())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mlp.partial_fit(x, y, classes=[0, 1, 2])
    return CalibratedClassifierCV(mlp, cv='prefit').fit(x, y)


def _bases() -> list[bytes]:
    out = []
    for clf in (train('sgd'), train('mlp'), _seeded_mlp()):
        out.append(dump_classifier(clf))  # protocol 2, as PySpacer writes
        out.extend(pickle.dumps(clf, protocol=p) for p in (0, 4, 5))
    return out


BASES = _bases()
ALL_GLOBALS = [*entries(), *FORBIDDEN_GLOBALS]


def _boundaries(data: bytes) -> list[int]:
    try:
        return [pos for _, _, pos in pickletools.genops(data)] + [len(data)]
    except Exception:
        return [0, len(data)]


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(['flip', 'insert', 'delete', 'truncate',
                                'global', 'splice']))
    if not data:
        return draw(st.binary(max_size=16))
    if how == 'flip':
        pos = draw(st.integers(0, len(data) - 1))
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    if how == 'truncate':
        return data[:draw(st.integers(0, len(data) - 1))]
    bounds = _boundaries(data)
    if how == 'insert':
        at = draw(st.sampled_from(bounds))
        opcode = draw(st.sampled_from(OPCODES))
        return data[:at] + opcode + draw(st.binary(max_size=9)) + data[at:]
    if how == 'delete' and len(bounds) > 2:
        i = draw(st.integers(0, len(bounds) - 2))
        return data[:bounds[i]] + data[bounds[i + 1]:]
    if how == 'splice':
        # An opcode run copied from elsewhere (another object's program).
        other = draw(st.sampled_from(BASES))
        start = draw(st.integers(0, len(other) - 1))
        piece = other[start:start + draw(st.integers(1, 64))]
        at = draw(st.sampled_from(bounds))
        return data[:at] + piece + data[at:]
    # Swap one GLOBAL (protocols 0-3) for another name.
    module, name = draw(st.sampled_from(ALL_GLOBALS))
    spots = [i for i in range(len(data)) if data[i:i + 1] == b'c'
             and b'\n' in data[i:i + 120]]
    if not spots:
        return data
    at = draw(st.sampled_from(spots))
    end = data.find(b'\n', data.find(b'\n', at) + 1)
    if end < 0:
        return data
    return (data[:at] + b'c' + module.encode() + b'\n' + name.encode()
            + b'\n' + data[end + 1:])


@st.composite
def mutated_pickle(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutation(data))
    return data


@pytest.fixture(scope='module')
def baseline():
    for data in BASES:
        parse_classifier(data)
    return snapshot()


def test_mutated_pickles_only_raise_classifier_load_error(baseline):
    @FUZZ
    @given(mutated_pickle())
    def check(data):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try:
                clf = parse_classifier(data, 'fuzzed.pkl')
            except ClassifierLoadError:
                pass
            else:
                assert isinstance(clf, CalibratedClassifierCV)
        assert changes(baseline, snapshot()) == []

    check()
