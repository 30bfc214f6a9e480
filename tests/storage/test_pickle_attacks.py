"""Each pickle attack of issue 9 is refused, and the process is unchanged.

The attacks are hand-written opcode programs (``pickle_attacks``). For
each, the loader must raise ClassifierLoadError (UnsafePickleError where
the pickle asks for something forbidden) and every allowlisted class,
function and dtype singleton must be exactly as before. A subprocess
runs the class-changing ones through plain ``pickle`` to show they are
real.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from spacer_worker.exceptions import (
    ClassifierLoadError,
    ClassifierTooLargeError,
    UnsafePickleError,
)
from spacer_worker.storage.classifiers import dump_classifier, parse_classifier

from . import pickle_attacks as attacks
from .class_state import changes, snapshot
from .test_classifiers import train

# Attacks refused for what they ask for (the rest are malformed input).
MALFORMED = {'bytearray8_length'}


@pytest.fixture(scope='module')
def warm():
    """Load real classifiers first, so lazy imports and caches settle
    before the snapshots."""
    for kind in ('sgd', 'mlp'):
        parse_classifier(dump_classifier(train(kind)))


@pytest.mark.parametrize('name', sorted(attacks.ALL))
def test_attack_is_refused_and_changes_nothing(warm, name):
    data = attacks.ALL[name]()
    before = snapshot()
    expected = ClassifierLoadError if name in MALFORMED else UnsafePickleError
    with pytest.raises(expected) as info:
        parse_classifier(data, 'evil.pkl')
    assert 'evil.pkl' in str(info.value)
    assert changes(before, snapshot()) == []


_PLAIN_LOAD = r'''
import json, pickle, sys
import copyreg
import numpy.random._pickle as npp
import sklearn.calibration as cal
import sklearn.neural_network._stochastic_optimizers as so
def state():
    return [repr(so.AdamOptimizer.__dict__.get('_get_updates')),
            repr(cal._CalibratedClassifier.__dict__.get('predict_proba')),
            repr(npp.__bit_generator_ctor.__defaults__),
            repr(dict(copyreg._reconstructor.__dict__))]
before = state()
try:
    pickle.loads(bytes.fromhex(sys.argv[1]))
except Exception:
    pass
print(json.dumps([a != b for a, b in zip(before, state())]))
'''


@pytest.mark.parametrize('name, changed', [
    ('adam_get_updates', 0), ('calibrated_predict_proba', 1),
    ('function_defaults', 2), ('function_dict', 3)])
def test_class_changing_attacks_work_on_plain_pickle(name, changed):
    out = subprocess.run(
        [sys.executable, '-c', _PLAIN_LOAD, attacks.ALL[name]().hex()],
        capture_output=True, text=True, timeout=120, check=True)
    flags = json.loads(out.stdout)
    assert flags[changed] and sum(flags) == 1


@pytest.mark.parametrize('build, size', [
    (attacks.list_range, 1000), (attacks.bytes_of_size, 1000),
    (attacks.bytearray_of_size, 1000), (attacks.reconstructor_list, 1000)])
def test_sized_attacks_are_refused_even_when_small(warm, build, size):
    # Plain pickle makes an object of the attacker's size...
    assert len(pickle.loads(build(size))) == size
    # ...which the restricted loader never does, whatever the size.
    with pytest.raises(UnsafePickleError):
        parse_classifier(build(size))


def test_oversized_classifier_is_refused_before_unpickling(monkeypatch):
    data = dump_classifier(train('sgd'))
    monkeypatch.setenv('SPACER_CLASSIFIER_MAX_BYTES', str(len(data) - 1))
    with pytest.raises(ClassifierTooLargeError,
                       match='CLASSIFIER_MAX_BYTES') as info:
        parse_classifier(data, 'big.pkl')
    assert 'big.pkl' in str(info.value)
    monkeypatch.setenv('SPACER_CLASSIFIER_MAX_BYTES', str(len(data)))
    assert parse_classifier(data).classes_.tolist() == [0, 1, 2]


def test_global_smuggled_into_a_real_classifier_is_refused(warm):
    # A real classifier whose estimator holds a class as an attribute:
    # every step is allowed, but the result would carry builtins.list.
    clf = train('sgd')
    clf.estimator.shuffle = list
    before = snapshot()
    with pytest.raises(UnsafePickleError, match='builtins.list'):
        parse_classifier(pickle.dumps(clf, protocol=2))
    assert changes(before, snapshot()) == []


def test_method_shadowing_state_is_refused(warm):
    clf = train('mlp')
    clf.calibrated_classifiers_[0].__dict__['predict_proba'] = 0
    with pytest.raises(UnsafePickleError, match="'predict_proba'"):
        parse_classifier(pickle.dumps(clf, protocol=2))


def test_snapshot_sees_what_plain_pickle_changes(warm):
    # The fingerprint must catch the attacks it is used to rule out.
    import numpy.random._pickle as npp
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
    original = AdamOptimizer.__dict__['_get_updates']
    defaults = npp.__bit_generator_ctor.__defaults__
    before = snapshot()
    try:
        pickle.loads(attacks.adam_get_updates())
        pickle.loads(attacks.function_defaults())
        found = changes(before, snapshot())
    finally:
        AdamOptimizer._get_updates = original
        npp.__bit_generator_ctor.__defaults__ = defaults
    assert any(name.endswith('AdamOptimizer._get_updates') for name in found)
    assert 'numpy.random._pickle.__bit_generator_ctor' in found
    assert changes(before, snapshot()) == []


@pytest.mark.parametrize('build', [attacks.colliding_dict_keys,
                                   attacks.colliding_set_items])
def test_keys_made_to_collide_are_refused(warm, build):
    # Plain pickle builds them: all different, all with one hash, so each
    # insertion compares with every key before it.
    keys = pickle.loads(build(1000))
    assert len(keys) == 1000 and len({hash(k) for k in keys}) == 1
    with pytest.raises(UnsafePickleError, match='with one hash'):
        parse_classifier(build(), 'evil.pkl')


def test_many_distinct_numeric_keys_still_load():
    # The collision rule counts different keys per hash, not keys: the
    # same small ints in many dicts, and a large dict of distinct ints
    # (-1 and -2 share a hash, as do 1, 1.0 and True, which are equal).
    from spacer_worker.storage.unpickler import restricted_loads
    value = [dict.fromkeys(range(-2, 2000)) for _ in range(20)]
    value.append({-1: 0, -2: 0, 1.0: 0, (1, 2): 0, 2.5: frozenset(range(50))})
    assert restricted_loads(pickle.dumps(value, protocol=4)) == value
