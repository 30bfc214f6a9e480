"""Extractor and trainer descriptions: allowlisted class paths, PySpacer's
serialized shape, and what calling a description does."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.exceptions import ExtractorNotSupportedError, UnknownClassError
from spacer_worker.extractors import (
    DummyExtractor,
    EfficientNetExtractor,
    FeatureExtractor,
    VGG16CaffeExtractor,
)
from spacer_worker.messages import (
    ExtractFeaturesMsg,
    ExtractFeaturesReturnMsg,
    TrainClassifierMsg,
)
from spacer_worker.train_classifier import (
    ClassifierTrainer,
    MiniBatchTrainer,
    trainer_factory,
)

WEIGHTS = {'weights': DataLocation('filesystem', '/w.pt')}


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """Write a module on sys.path that leaves a marker file when imported."""
    created = []

    def write(body: str) -> tuple[str, object]:
        name = f'plugin_{uuid.uuid4().hex[:8]}'
        marker = tmp_path / f'{name}.imported'
        (tmp_path / f'{name}.py').write_text(
            f'import pathlib\npathlib.Path({str(marker)!r}).touch()\n'
            + textwrap.dedent(body))
        created.append(name)
        return name, marker

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in created:
        sys.modules.pop(name, None)


EXTRACTOR_PLUGIN = '''
from spacer_worker.extractors import FeatureExtractor

class MeanColour(FeatureExtractor):
    CROP_SIZE = 8

    @property
    def feature_dim(self):
        return 3

    def patches_to_features(self, patch_list):
        return [p.reshape(-1, 3).mean(axis=0) for p in patch_list], False

class NotAnExtractor:
    def __init__(self, **kwargs):
        pass
'''


def test_extractor_outside_allowlist_is_refused_without_import(plugin_module):
    name, marker = plugin_module(EXTRACTOR_PLUGIN)
    data = {'class_path': f'{name}.MeanColour', 'data_locations': {},
            'data_hashes': {}}

    with pytest.raises(UnknownClassError, match='EXTRA_EXTRACTOR_CLASSES'):
        FeatureExtractor.deserialize(data)

    assert not marker.exists()
    assert name not in sys.modules


def test_extractor_allowed_by_setting_round_trips(plugin_module, monkeypatch):
    name, marker = plugin_module(EXTRACTOR_PLUGIN)
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES',
                       f'some.Other, {name}.MeanColour')
    data = {'class_path': f'{name}.MeanColour',
            'data_locations': {'weights': WEIGHTS['weights'].serialize()},
            'data_hashes': {'weights': 'ab' * 32}}

    extractor = FeatureExtractor.deserialize(data)

    assert marker.exists()
    assert type(extractor).__name__ == 'MeanColour'
    assert extractor.serialize() == data


def test_extractor_allowed_must_subclass_feature_extractor(plugin_module,
                                                           monkeypatch):
    name, _ = plugin_module(EXTRACTOR_PLUGIN)
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES',
                       f'{name}.NotAnExtractor')
    with pytest.raises(UnknownClassError, match='not a FeatureExtractor'):
        FeatureExtractor.deserialize({'class_path': f'{name}.NotAnExtractor',
                                      'data_locations': {}})


def test_custom_extractor_runs_pyspacer_style_patches_to_features(
        plugin_module, monkeypatch):
    pytest.importorskip('PIL')
    from PIL import Image
    name, _ = plugin_module(EXTRACTOR_PLUGIN)
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES', f'{name}.MeanColour')
    extractor = FeatureExtractor.deserialize(
        {'class_path': f'{name}.MeanColour', 'data_locations': {}})
    image = Image.new('RGB', (40, 30), (200, 100, 50))

    features, msg = extractor(image, [(5, 5), (20, 35)])

    assert features.npoints == 2 and features.feature_dim == 3
    assert features.rows == [5, 20] and features.cols == [5, 35]
    assert features.feature_array()[1].tolist() == [200.0, 100.0, 50.0]
    assert msg.extractor_loaded_remotely is False


@pytest.mark.parametrize('path', [
    'spacer.extractors.efficientnet.EfficientNetExtractor',
    'spacer.extractors.EfficientNetExtractor',
    'spacer_worker.extractors.efficientnet.EfficientNetExtractor',
    'spacer_worker.extractors.EfficientNetExtractor',
])
def test_builtin_extractor_paths_of_both_libraries_are_accepted(path):
    extractor = FeatureExtractor.deserialize({
        'class_path': path,
        'data_locations': {'weights': WEIGHTS['weights'].serialize()}})
    assert isinstance(extractor, EfficientNetExtractor)
    assert extractor.serialize()['class_path'] == \
        'spacer.extractors.efficientnet.EfficientNetExtractor'
    assert extractor.feature_dim == 1280


def test_vgg16_is_described_but_refuses_to_run():
    vgg = VGG16CaffeExtractor(data_locations={
        'definition': DataLocation('memory', 'd'), 'weights': WEIGHTS['weights']})
    assert vgg.feature_dim == 4096
    with pytest.raises(ExtractorNotSupportedError) as info:
        vgg(None, [(1, 1)])
    assert 'Caffe' in str(info.value)
    assert 'EfficientNetExtractor' in str(info.value)


def test_dummy_extractor_gives_random_features_of_its_dimension():
    extractor = DummyExtractor(feature_dim=8)

    features, msg = extractor(None, [(1, 2), (3, 4), (5, 6)])

    assert isinstance(features, ImageFeatures)
    assert (features.npoints, features.feature_dim) == (3, 8)
    assert features.valid_rowcol
    assert features[(3, 4)].shape == (8,)
    assert msg == ExtractFeaturesReturnMsg.example()
    assert DummyExtractor().feature_dim == 4096


def test_extractor_hash_check_names_key_and_both_hashes():
    from hashlib import sha256

    from spacer_worker.exceptions import HashMismatchError
    good = sha256(b'weights').hexdigest()
    extractor = EfficientNetExtractor(data_locations=WEIGHTS,
                                      data_hashes={'weights': good})
    extractor.check_data_hash(b'weights', 'weights')
    with pytest.raises(HashMismatchError) as info:
        extractor.check_data_hash(b'tampered', 'weights')
    assert good in str(info.value) and "'weights'" in str(info.value)


# --- trainers --------------------------------------------------------------

TRAINER_PLUGIN = '''
from spacer_worker.train_classifier import ClassifierTrainer

class Constant(ClassifierTrainer):
    def __init__(self, value=1):
        self.value = value

    def serialize(self):
        return {**super().serialize(), 'value': self.value}

    def __call__(self, labels, nbr_epochs, pc_models, clf_type):
        return self.value
'''


def test_trainer_outside_allowlist_is_refused_without_import(plugin_module):
    name, marker = plugin_module(TRAINER_PLUGIN)
    with pytest.raises(UnknownClassError, match='EXTRA_TRAINER_CLASSES'):
        trainer_factory(f'{name}.Constant')
    with pytest.raises(UnknownClassError):
        TrainClassifierMsg.deserialize({
            **TrainClassifierMsg.example().serialize(),
            'trainer': {'class_path': f'{name}.Constant', 'value': 2}})
    assert not marker.exists()


def test_trainer_allowed_by_setting_in_a_message(plugin_module, monkeypatch):
    name, _ = plugin_module(TRAINER_PLUGIN)
    monkeypatch.setenv('SPACER_EXTRA_TRAINER_CLASSES', f'{name}.Constant')
    data = {**TrainClassifierMsg.example().serialize(),
            'trainer': {'class_path': f'{name}.Constant', 'value': 2}}

    msg = TrainClassifierMsg.deserialize(data)

    assert msg.trainer(None, 1, [], 'LR') == 2
    assert msg.serialize() == data
    assert trainer_factory(f'{name}.Constant').value == 1


def test_minibatch_trainer_serializes_only_non_default_parameters():
    assert MiniBatchTrainer().serialize() == {
        'class_path': 'spacer.train_classifier.MiniBatchTrainer'}
    trainer = MiniBatchTrainer(mlp_hidden_layer_sizes=[64, 32], sgd_loss='hinge')
    assert trainer.mlp_hidden_layer_sizes == (64, 32)
    assert trainer.serialize() == {
        'class_path': 'spacer.train_classifier.MiniBatchTrainer',
        'mlp_hidden_layer_sizes': [64, 32], 'sgd_loss': 'hinge'}
    assert ClassifierTrainer.deserialize(trainer.serialize()) == trainer


def test_minibatch_batch_size_default_follows_the_setting(monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_BATCH_LABEL_COUNT', '123')
    trainer = trainer_factory('minibatch')
    assert trainer.batch_size == 123
    assert trainer.serialize() == {
        'class_path': 'spacer.train_classifier.MiniBatchTrainer'}
    assert MiniBatchTrainer(batch_size=5000).serialize()['batch_size'] == 5000


def test_trainer_name_or_instance_in_message():
    by_name = TrainClassifierMsg.example()
    assert isinstance(by_name.trainer, MiniBatchTrainer)
    by_instance = TrainClassifierMsg(**{
        **vars(by_name), 'trainer': MiniBatchTrainer()})
    assert by_instance == by_name
    assert by_name.feature_cache_dir == TrainClassifierMsg.FeatureCache.AUTO
    assert by_name.serialize()['feature_cache_dir'] == 'auto'


def test_feature_cache_values():
    FC = TrainClassifierMsg.FeatureCache
    base = TrainClassifierMsg.example().serialize()
    for given, expected in [('disabled', FC.DISABLED), ('auto', FC.AUTO),
                            ('/tmp/x', '/tmp/x')]:
        msg = TrainClassifierMsg.deserialize({**base,
                                              'feature_cache_dir': given})
        assert msg.feature_cache_dir == expected
        assert msg.serialize()['feature_cache_dir'] == given


def test_extract_message_with_each_extractor_round_trips():
    for extractor in (DummyExtractor(feature_dim=3),
                      EfficientNetExtractor(data_locations=WEIGHTS),
                      VGG16CaffeExtractor(data_locations={
                          **WEIGHTS, 'definition': DataLocation('memory', 'd')})):
        msg = ExtractFeaturesMsg(job_token='x', extractor=extractor,
                                 rowcols=[(1, 2)],
                                 image_loc=DataLocation('memory', 'i'),
                                 feature_loc=DataLocation('memory', 'f'))
        back = ExtractFeaturesMsg.deserialize(msg.serialize())
        assert back == msg
        assert type(back.extractor) is type(extractor)


def test_pyspacer_constant_lists_in_config_match_the_enums():
    from spacer_worker import config
    from spacer_worker.data_classes import StorageType
    from spacer_worker.messages import ClassifierType, TaskName
    from spacer_worker.train_classifier import BUILTIN_TRAINERS
    assert config.TASKS == [t.value for t in TaskName]
    assert config.CLASSIFIER_TYPES == [c.value for c in ClassifierType]
    assert config.STORAGE_TYPES == [s.value for s in StorageType]
    assert config.TRAINER_NAMES == list(BUILTIN_TRAINERS)


def test_minibatch_trainer_runs_pyspacer_style_positional_call(tmp_path):
    pytest.importorskip('sklearn')
    from spacer_worker.data_classes import ImageLabels, ValResults
    from spacer_worker.messages import TrainClassifierReturnMsg
    from spacer_worker.task_utils import preprocess_labels

    data = {}
    for i in range(8):
        point_labels = [i % 2, (i + 1) % 2, 0, 1, 1, 0]
        loc = DataLocation('filesystem', str(tmp_path / f'{i}.featurevector'))
        ImageFeatures.make_random(point_labels, feature_dim=6).store(loc)
        data[loc] = [(p, p, label) for p, label in enumerate(point_labels)]
    labels = preprocess_labels(ImageLabels(data))
    epochs = []

    clf, val, ret = MiniBatchTrainer(batch_size=10)(
        labels, 2, [], 'LR',
        progress=lambda **info: epochs.append(info['epoch']))

    assert sorted(clf.classes_.tolist()) == [0, 1]
    assert isinstance(val, ValResults)
    assert isinstance(ret, TrainClassifierReturnMsg)
    assert len(ret.ref_accs) == 2 and len(epochs) == 2


@pytest.mark.parametrize('class_path, pyspacer_raises', [
    ('no.such.module.Trainer', ImportError),
    ('spacer_worker.data_classes.ValResults', TypeError),
])
def test_a_refused_trainer_path_is_what_pyspacer_would_raise(class_path,
                                                             pyspacer_raises):
    """PySpacer imports any class path and fails as the import does; we
    refuse what is not allowed, under that same class."""
    from spacer_worker.exceptions import UnknownClassError
    from spacer_worker.train_classifier import trainer_factory

    with pytest.raises(pyspacer_raises, match='is not allowed') as raised:
        trainer_factory(class_path)
    assert isinstance(raised.value, UnknownClassError)


def test_a_refused_path_imports_nothing():
    """Telling the refusal's class reads only modules already loaded: a
    module of ours that acts on import (the CLI's __main__) is not run."""
    import sys

    from spacer_worker.exceptions import UnknownClassError
    from spacer_worker.train_classifier import trainer_factory

    sys.modules.pop('spacer_worker.cli.__main__', None)
    with pytest.raises(UnknownClassError):
        trainer_factory('spacer.cli.__main__.Trainer')
    assert 'spacer_worker.cli.__main__' not in sys.modules


def test_a_refused_path_does_not_resolve_lazy_exports():
    """A name our module exports lazily (resolved by importing another
    module on first lookup) is not looked up by a refusal."""
    import sys

    import spacer_worker.extractors.efficientnet  # noqa: F401
    from spacer_worker.exceptions import UnknownClassError
    from spacer_worker.train_classifier import trainer_factory

    name = 'spacer_worker.extractors.torch_extractors'
    kept = sys.modules.pop(name, None)
    try:
        with pytest.raises(UnknownClassError):
            trainer_factory('spacer.extractors.efficientnet.TorchExtractor')
        assert name not in sys.modules
    finally:
        if kept is not None:
            sys.modules[name] = kept
