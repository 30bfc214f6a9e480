"""Bad messages fail at construction or decoding with a typed error that
names the field and the offending value (never an AssertionError)."""

from __future__ import annotations

import copy
import json

import pytest

from spacer_worker.data_classes import DataLocation, ImageLabels, ValResults
from spacer_worker.exceptions import (
    InvalidLocationError,
    MessageError,
    PermanentError,
    RowColumnInvalidError,
    StorageReadOnlyError,
    UnknownClassError,
)
from spacer_worker.extractors import EfficientNetExtractor, VGG16CaffeExtractor
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    ClassifyReturnMsg,
    ExtractFeaturesMsg,
    JobMsg,
    TrainClassifierMsg,
    TrainingTaskLabels,
)
from spacer_worker.train_classifier import MiniBatchTrainer, trainer_factory

MEM = DataLocation('memory', 'a')


def extract(**changes):
    args = dict(job_token='t', extractor=EfficientNetExtractor(
        data_locations={'weights': DataLocation('filesystem', '/w.pt')}),
        rowcols=[(1, 2)], image_loc=MEM, feature_loc=MEM)
    args.update(changes)
    return ExtractFeaturesMsg(**args)


def train(**changes):
    args = dict(job_token='t', trainer='minibatch', nbr_epochs=2,
                clf_type='LR', labels=TrainingTaskLabels.example(),
                previous_model_locs=[], model_loc=MEM, valresult_loc=MEM)
    args.update(changes)
    return TrainClassifierMsg(**args)


# (id, callable, error type, substrings the message must contain)
CONSTRUCTION_CASES = [
    ('unknown-storage-type', lambda: DataLocation('ftp', 'x'),
     InvalidLocationError, ['storage_type', "'ftp'", "'s3'"]),
    ('s3-without-bucket', lambda: DataLocation('s3', 'k/x.pt'),
     InvalidLocationError, ['bucket_name', 'None', 's3']),
    ('key-not-str', lambda: DataLocation('memory', 5),
     MessageError, ['DataLocation.key', '5', 'string']),
    ('empty-rowcols', lambda: extract(rowcols=[]),
     MessageError, ['rowcols', 'empty']),
    ('rowcol-triple', lambda: extract(rowcols=[(1, 2, 3)]),
     MessageError, ['rowcols', '(1, 2, 3)', '(row, col) pair']),
    ('rowcol-single', lambda: extract(rowcols=[[1]]),
     MessageError, ['rowcols', '[1]']),
    ('rowcols-not-list', lambda: extract(rowcols='12'),
     MessageError, ['rowcols', "'12'"]),
    ('float-row', lambda: extract(rowcols=[(1.5, 2)]),
     RowColumnInvalidError, ['rowcols', '1.5', 'integers']),
    ('str-col', lambda: extract(rowcols=[(1, '2')]),
     RowColumnInvalidError, ['rowcols', "'2'", 'column']),
    ('negative-row', lambda: extract(rowcols=[(3, 4), (-1, 2)]),
     RowColumnInvalidError, ['rowcols', '[1]', '-1', 'non-negative']),
    ('bool-row', lambda: extract(rowcols=[(True, 2)]),
     RowColumnInvalidError, ['True']),
    ('write-to-url', lambda: extract(
        feature_loc=DataLocation('url', 'https://x.org/f')),
     StorageReadOnlyError, ['feature_loc', 'https://x.org/f', 'url']),
    ('model-to-url', lambda: train(
        model_loc=DataLocation('url', 'https://x.org/m.pkl')),
     StorageReadOnlyError, ['model_loc', 'https://x.org/m.pkl']),
    ('extractor-as-string', lambda: extract(extractor='efficientnet'),
     MessageError, ['extractor', "'efficientnet'", 'FeatureExtractor']),
    ('job-token-int', lambda: extract(job_token=17),
     MessageError, ['job_token', '17', 'string']),
    ('unknown-task-name', lambda: JobMsg('extract_feature', []),
     MessageError, ['task_name', "'extract_feature'", 'extract_features']),
    ('task-of-wrong-kind', lambda: JobMsg(
        'classify_image', [ClassifyFeaturesMsg.example()]),
     MessageError, ['JobMsg.tasks', 'ClassifyImageMsg', 'ClassifyFeaturesMsg']),
    ('unknown-clf-type', lambda: train(clf_type='SVM'),
     MessageError, ['clf_type', "'SVM'", "'MLP'"]),
    ('unknown-trainer-name', lambda: train(trainer='fancy'),
     UnknownClassError, ['trainer', "'fancy'", 'minibatch']),
    ('trainer-wrong-type', lambda: train(trainer=3),
     MessageError, ['trainer', '3']),
    ('epochs-as-str', lambda: train(nbr_epochs='3'),
     MessageError, ['nbr_epochs', "'3'", 'integer']),
    ('zero-epochs', lambda: train(nbr_epochs=0),
     MessageError, ['nbr_epochs', '0']),
    ('feature-cache-int', lambda: train(feature_cache_dir=5),
     MessageError, ['feature_cache_dir', '5']),
    ('labels-wrong-type', lambda: train(labels={}),
     MessageError, ['labels', 'TrainingTaskLabels']),
    ('previous-model-not-location', lambda: train(
        previous_model_locs=['/m.pkl']),
     MessageError, ['previous_model_locs', '[0]', "'/m.pkl'", 'DataLocation']),
    ('labels-keyed-by-path', lambda: ImageLabels({'/f.featurevector': []}),
     MessageError, ['/f.featurevector', 'DataLocation']),
    ('annotation-pair', lambda: ImageLabels({MEM: [(1, 2)]}),
     MessageError, ['(1, 2)', 'triple']),
    ('label-float', lambda: ImageLabels({MEM: [(1, 2, 1.5)]}),
     MessageError, ['1.5', 'label']),
    ('valresults-index', lambda: ValResults(
        scores=[0.5], gt=[2], est=[0], classes=[1, 2]),
     MessageError, ['gt', '2', '2 classes']),
    ('valresults-lengths', lambda: ValResults(
        scores=[0.5, 0.2], gt=[0], est=[0], classes=[1]),
     MessageError, ['same length']),
    ('valid-rowcol-str', lambda: ClassifyReturnMsg(
        runtime=1.0, scores=[], classes=[], valid_rowcol='yes'),
     MessageError, ['valid_rowcol', "'yes'", 'boolean']),
    ('score-not-number', lambda: ClassifyReturnMsg(
        runtime=1.0, scores=[(1, 2, ['high'])], classes=[1],
        valid_rowcol=True),
     MessageError, ['scores', "'high'"]),
    ('extractor-missing-weights', lambda: EfficientNetExtractor(
        data_locations={}), MessageError, ['weights', 'data_locations']),
    ('vgg-missing-definition', lambda: VGG16CaffeExtractor(
        data_locations={'weights': MEM}), MessageError, ["'definition'"]),
    ('extractor-location-not-location', lambda: EfficientNetExtractor(
        data_locations={'weights': '/w.pt'}),
     MessageError, ['data_locations', "'/w.pt'"]),
    ('extractor-hash-not-str', lambda: EfficientNetExtractor(
        data_locations={'weights': MEM}, data_hashes={'weights': 12}),
     MessageError, ['data_hashes', '12']),
    ('trainer-batch-size-zero', lambda: MiniBatchTrainer(batch_size=0),
     MessageError, ['batch_size', '0', 'positive']),
    ('trainer-layers-empty', lambda: MiniBatchTrainer(
        mlp_hidden_layer_sizes=()),
     MessageError, ['mlp_hidden_layer_sizes', '()']),
    ('trainer-average-str', lambda: MiniBatchTrainer(sgd_average='no'),
     MessageError, ['sgd_average', "'no'"]),
    ('trainer-factory-unknown-path', lambda: trainer_factory('my.Trainer'),
     UnknownClassError, ["'my.Trainer'", 'EXTRA_TRAINER_CLASSES']),
]


@pytest.mark.parametrize('build,error,words',
                         [c[1:] for c in CONSTRUCTION_CASES],
                         ids=[c[0] for c in CONSTRUCTION_CASES])
def test_bad_construction_raises_typed_error_naming_field_and_value(
        build, error, words):
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, PermanentError)
    for word in words:
        assert word in str(info.value)


GOOD_EXTRACT = extract().serialize()


def mutated(path, value):
    data = copy.deepcopy(GOOD_EXTRACT)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.loads(json.dumps(data))


DECODE_CASES = [
    ('not-an-object', ['rowcols'], MessageError,
     ['ExtractFeaturesMsg', 'JSON object', 'list'], True),
    ('missing-key', ['image_loc', KeyError], MessageError,
     ["missing key 'image_loc'"], False),
    ('unknown-key', ['rowcol', [[1, 2]]], MessageError,
     ["unknown key(s) 'rowcol'"], False),
    ('row-pair-too-short', ['rowcols', [[1, 2], [3]]], MessageError,
     ['ExtractFeaturesMsg.rowcols', '[1]', '[3]'], False),
    ('s3-no-bucket', ['feature_loc', 'storage_type', 's3'],
     InvalidLocationError, ['feature_loc', 'bucket_name'], False),
    ('unknown-storage', ['image_loc', 'storage_type', 'gcs'],
     InvalidLocationError, ['image_loc', "'gcs'"], False),
    ('extractor-class', ['extractor', 'class_path', 'os.system'],
     UnknownClassError, ["'os.system'", 'EXTRA_EXTRACTOR_CLASSES'], False),
    ('extractor-class-not-str', ['extractor', 'class_path', 3],
     MessageError, ['class_path', '3'], False),
    ('bad-hash-type', ['extractor', 'data_hashes', ['x']],
     MessageError, ['data_hashes', "['x']"], False),
]


@pytest.mark.parametrize('path,error,words,whole',
                         [c[1:] for c in DECODE_CASES],
                         ids=[c[0] for c in DECODE_CASES])
def test_bad_payload_raises_typed_error_naming_field(path, error, words,
                                                     whole):
    data = path if whole else mutated(path[:-1], path[-1])
    with pytest.raises(error) as info:
        ExtractFeaturesMsg.deserialize(data)
    for word in words:
        assert word in str(info.value)


def test_nested_error_names_the_path_and_keeps_the_cause():
    job = JobMsg('extract_features', [extract(), extract()]).serialize()
    job['tasks'][1]['rowcols'] = [[1, 2], [3, 'x']]

    with pytest.raises(RowColumnInvalidError) as info:
        JobMsg.deserialize(json.loads(json.dumps(job)))

    text = str(info.value)
    assert text.startswith('JobMsg.tasks')
    assert '[1]' in text and 'ExtractFeaturesMsg.rowcols' in text
    assert "'x'" in text
    assert info.value.__cause__ is not None


def test_unknown_trainer_class_in_payload_is_refused():
    data = train().serialize()
    data['trainer'] = {'class_path': 'subprocess.Popen', 'args': ['ls']}
    with pytest.raises(UnknownClassError, match='subprocess.Popen'):
        TrainClassifierMsg.deserialize(data)


def test_trainer_unknown_parameter_is_refused():
    data = train().serialize()
    data['trainer'] = {'class_path': 'spacer.train_classifier.MiniBatchTrainer',
                       'learning_rate': 3}
    with pytest.raises(MessageError, match='learning_rate'):
        TrainClassifierMsg.deserialize(data)


def test_trainer_and_legacy_trainer_name_together_are_ambiguous():
    data = train().serialize()
    data['trainer_name'] = 'minibatch'
    with pytest.raises(MessageError, match="'trainer' and 'trainer_name'"):
        TrainClassifierMsg.deserialize(data)


def test_job_return_ok_needs_results_of_the_task_kind():
    from spacer_worker.messages import ExtractFeaturesReturnMsg, JobReturnMsg
    job = JobMsg.example()  # classify_image
    with pytest.raises(MessageError, match='ClassifyReturnMsg'):
        JobReturnMsg(original_job=job, ok=True,
                     results=[ExtractFeaturesReturnMsg.example()],
                     error_message=None)


def test_a_bad_assignment_fails_at_check_and_deserialize_not_before():
    msg = extract(rowcols=[(1, 2), (3, 4)])

    msg.rowcols = []
    with pytest.raises(MessageError, match='rowcols'):
        msg.check()
    with pytest.raises(MessageError, match='rowcols'):
        ExtractFeaturesMsg.deserialize(msg.serialize())

    msg.rowcols = [[5, 6]]   # a good value is stored converted
    assert msg.rowcols == [(5, 6)]
    msg.check()

    msg.feature_loc = DataLocation('url', 'https://x.org/f')
    with pytest.raises(StorageReadOnlyError):
        msg.check()
    with pytest.raises(StorageReadOnlyError):
        ExtractFeaturesMsg.deserialize(msg.serialize())


def test_a_job_with_a_bad_task_is_refused_by_process_job_and_submit():
    from spacer_worker.client.pyspacer_objects import as_job_msg
    from spacer_worker.tasks import process_job

    job = JobMsg.example()
    job.task_name = 'invalid'
    with pytest.raises(MessageError, match='task_name'):
        process_job(job)
    with pytest.raises(MessageError, match='task_name'):
        as_job_msg(job)


def test_data_location_is_immutable_and_hashable():
    loc = DataLocation('s3', 'k', 'b')
    with pytest.raises(AttributeError):
        loc.key = 'other'
    assert {loc: 1}[DataLocation('s3', 'k', 'b')] == 1
