"""Classifier pickles: round trip, PySpacer's legacy upgrades, and the
restricted unpickler refusing anything that is not a classifier."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import warnings

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import ClassifierLoadError, UnsafePickleError
from spacer_worker.storage import load_classifier, store_classifier
from spacer_worker.storage.classifiers import dump_classifier, parse_classifier


def data(n=200, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, dim)) + y[:, None]).astype(np.float32)
    return x, y


def train(kind='sgd'):
    x, y = data()
    if kind == 'sgd':
        clf = SGDClassifier(loss='log_loss', average=True, random_state=0)
    else:
        clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(3):
            clf.partial_fit(x, y, classes=[0, 1, 2])
    return CalibratedClassifierCV(clf, cv='prefit').fit(x, y)


@pytest.fixture(scope='module', params=['sgd', 'mlp'])
def clf(request):
    return train(request.param)


def test_round_trip_predicts_identically(clf, tmp_path):
    loc = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    store_classifier(loc, clf)
    loaded = load_classifier(loc)
    x, _ = data(seed=1)
    assert np.array_equal(loaded.predict_proba(x), clf.predict_proba(x))
    assert loaded.classes_.tolist() == [0, 1, 2]


def test_stored_with_pyspacers_pickle_protocol(clf):
    assert dump_classifier(clf)[:2] == b'\x80\x02'


def test_unfitted_or_foreign_objects_are_not_stored(tmp_path):
    loc = DataLocation('filesystem', str(tmp_path / 'm.pkl'))
    with pytest.raises(ValueError, match='fitted'):
        store_classifier(loc, CalibratedClassifierCV(SGDClassifier()))
    with pytest.raises(TypeError, match='SGDClassifier'):
        store_classifier(loc, SGDClassifier())
    assert not os.path.exists(tmp_path / 'm.pkl')


def _legacy(clf):
    """What a scikit-learn 0.22-era pickle looks like after loading:
    base_estimator names, no 'calibrators'/'classes'/'ensemble'/'n_jobs',
    SGD loss 'log'."""
    old = copy.deepcopy(clf)
    for obj in [old, *old.calibrated_classifiers_]:
        obj.base_estimator = obj.estimator
        del obj.estimator
    for calibrated in old.calibrated_classifiers_:
        calibrated.calibrators_ = calibrated.calibrators
        del calibrated.calibrators
        calibrated.classes_, calibrated.classes = calibrated.classes, None
    del old.ensemble, old.n_jobs
    if isinstance(old.base_estimator, SGDClassifier):
        for obj in [old, *old.calibrated_classifiers_]:
            obj.base_estimator.loss = 'log'
    return old


def test_legacy_classifiers_are_upgraded(clf):
    loaded = parse_classifier(pickle.dumps(_legacy(clf), protocol=2))
    x, _ = data(seed=2)
    assert np.array_equal(loaded.predict_proba(x), clf.predict_proba(x))
    assert not hasattr(loaded, 'base_estimator')
    assert loaded.ensemble is True and loaded.n_jobs is None
    for calibrated in loaded.calibrated_classifiers_:
        assert calibrated.classes.tolist() == [0, 1, 2]
        assert len(calibrated.calibrators) == 3
    if isinstance(loaded.estimator, SGDClassifier):
        assert loaded.estimator.loss == 'log_loss'


def test_old_module_paths_resolve(clf):
    # scikit-learn < 0.22 kept SGD in public modules; numpy 1 in numpy.core.
    data_ = pickle.dumps(clf, protocol=0)
    renamed = (data_.replace(b'sklearn.linear_model._stochastic_gradient',
                             b'sklearn.linear_model.stochastic_gradient')
               .replace(b'sklearn.linear_model._sgd_fast',
                        b'sklearn.linear_model.sgd_fast')
               .replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))
    assert renamed != data_
    loaded = parse_classifier(renamed)
    x, _ = data(seed=3)
    assert np.array_equal(loaded.predict_proba(x), clf.predict_proba(x))


class Payload:
    """Unpickling this would run ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_pickles(marker):
    command = f'touch {marker}'
    return {
        'os.system': pickle.dumps(Payload(os.system, command), protocol=2),
        'posix.system': pickle.dumps(Payload(os.system, command), protocol=0),
        'subprocess.call': pickle.dumps(
            Payload(subprocess.call, ['touch', str(marker)]), protocol=4),
        'builtins.exec': pickle.dumps(Payload(
            exec, f"open({str(marker)!r}, 'w').close()"), protocol=2),
        'builtins.eval': pickle.dumps(Payload(
            eval, f"open({str(marker)!r}, 'w')"), protocol=5),
    }


@pytest.mark.parametrize('name', ['os.system', 'posix.system',
                                  'subprocess.call',
                                  'builtins.exec', 'builtins.eval'])
def test_malicious_pickle_is_refused_without_running(tmp_path, name):
    marker = tmp_path / 'pwned'
    payload = _marker_pickles(marker)[name]
    # Sanity: plain pickle would run it.
    if name == 'os.system':
        pickle.loads(payload)
        assert marker.exists()
        marker.unlink()
    loc = DataLocation('filesystem', str(tmp_path / 'evil.pkl'))
    (tmp_path / 'evil.pkl').write_bytes(payload)
    with pytest.raises(UnsafePickleError) as info:
        load_classifier(loc)
    module, _, func = name.partition('.')
    assert func in str(info.value) and 'evil.pkl' in str(info.value)
    assert not marker.exists()


def test_malicious_payload_inside_a_real_classifier_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    clf = train('sgd')
    clf.estimator.extra = Payload(os.system, f'touch {marker}')
    with pytest.raises(UnsafePickleError, match='system'):
        parse_classifier(pickle.dumps(clf, protocol=2))
    assert not marker.exists()


@pytest.mark.parametrize('module, name', [
    ('builtins', 'getattr'), ('builtins', '__import__'), ('builtins', 'open'),
    ('sklearn.datasets', 'dump_svmlight_file'), ('sklearn.utils', 'Bunch'),
    ('numpy', 'load'), ('numpy.testing', 'assert_equal'),
    ('_codecs', 'decode'), ('copyreg', '_reconstructor.__globals__'),
    ('sklearn.calibration', '_SigmoidCalibration.__init__'),
])
def test_only_allowlisted_globals_resolve(module, name):
    forged = f'c{module}\n{name}\n)R.'.encode()
    with pytest.raises(UnsafePickleError, match=f'{module}.{name}'):
        parse_classifier(forged, 'forged.pkl')


def test_codecs_stand_in_only_decodes_latin1():
    forged = b'c_codecs\nencode\n(Vabc\nVrot13\ntR.'
    with pytest.raises(UnsafePickleError, match='rot13'):
        parse_classifier(forged)


@pytest.mark.parametrize('obj, message', [
    ({'not': 'a classifier'}, 'builtins.dict, not a CalibratedClassifier'),
    (np.zeros(3), 'numpy.ndarray'),
    (SGDClassifier(), 'SGDClassifier, not a Calibrated'),
    (CalibratedClassifierCV(SGDClassifier(), cv=3), "cv=3"),
    (CalibratedClassifierCV(SGDClassifier(), cv='prefit'), 'missing fitted'),
])
def test_wrong_objects_raise_classifier_load_error(obj, message):
    with pytest.raises(ClassifierLoadError, match=message):
        parse_classifier(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize('garbage', [b'', b'not a pickle', b'\x80\x02c',
                                     b'\x80\x05\x95garbage'])
def test_garbage_raises_classifier_load_error(garbage):
    with pytest.raises(ClassifierLoadError, match='not a readable'):
        parse_classifier(garbage)


@pytest.mark.parametrize('protocol', [0, 2, 5])
def test_mlp_holding_a_seed_sequence_loads(protocol):
    # An MLP trained with random_state=None in a process whose global
    # RandomState was never seeded by hand pickles that RandomState with
    # its SeedSequence (Cython's own pickle format).
    x, y = data()
    mlp = MLPClassifier(hidden_layer_sizes=(8,),
                        random_state=np.random.RandomState())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mlp.partial_fit(x, y, classes=[0, 1, 2])
    clf = CalibratedClassifierCV(mlp, cv='prefit').fit(x, y)
    pickled = pickle.dumps(clf, protocol=protocol)
    assert b'SeedSequence' in pickled
    loaded = parse_classifier(pickled)
    assert np.array_equal(loaded.predict_proba(x), clf.predict_proba(x))
    assert (loaded.estimator._random_state.get_state()[1].tolist()
            == clf.estimator._random_state.get_state()[1].tolist())


SECRET = 'SECRET-7f3a9c-DO-NOT-ECHO'


@pytest.mark.parametrize('opcode', [b'I', b'L', b'F', b'S', b'c', b'V'])
def test_an_unreadable_pickle_never_echoes_its_bytes(tmp_path, opcode):
    # A decoder's own message quotes the text it choked on (int(), float(),
    # a module name); ours says what failed and where, without the bytes.
    forged = opcode + SECRET.encode() + b'\n\xff.'
    if opcode == b'c':      # a global named by the secret: refused, unquoted
        forged = b'c' + SECRET.encode() + b'\nx\n)R.'
    (tmp_path / 'leaky.pkl').write_bytes(forged)
    with pytest.raises(ClassifierLoadError) as info:
        load_classifier(DataLocation('filesystem',
                                     str(tmp_path / 'leaky.pkl')))
    text = str(info.value)
    assert SECRET not in text and SECRET[:12] not in text
    assert 'leaky.pkl' in text
    assert 'not a readable classifier pickle' in text or \
        'not allowed' in text, text
