"""Example messages of every type, built the same way by both libraries.

``build_cases`` takes the four modules (``messages``, ``data_classes``,
``extractors``, ``train_classifier``) of either PySpacer (``spacer.*``) or
ours (``spacer_worker.*``), so one table drives both sides of the
compatibility test. This file is also exec'd in the PySpacer reference venv:
it must import nothing but the standard library.
"""

from pathlib import Path

WEIGHTS_SHA = 'a3' * 32
DEFINITION_SHA = '5f' * 32


def build_cases(M, D, E, T):  # noqa: N803 (module parameters)
    """Return ``[(case_id, class_name, object), ...]``."""
    Loc = D.DataLocation

    fs = Loc('filesystem', '/data/images/a.jpg')
    mem = Loc('memory', 'features/a.featurevector')
    s3 = Loc('s3', 'features/b.featurevector', 'coralnet-bucket')
    url = Loc('url', 'https://example.org/img/c.png?x=1')

    efficientnet = E.EfficientNetExtractor(
        data_locations={'weights': Loc('s3', 'efficientnet.pt', 'models')},
        data_hashes={'weights': WEIGHTS_SHA})
    efficientnet_plain = E.EfficientNetExtractor(
        data_locations={'weights': Loc('filesystem', '/weights/b0.pt')})
    vgg16 = E.VGG16CaffeExtractor(
        data_locations={
            'definition': Loc('url', 'https://example.org/vgg16.prototxt'),
            'weights': Loc('url', 'https://example.org/vgg16.caffemodel')},
        data_hashes={'definition': DEFINITION_SHA, 'weights': WEIGHTS_SHA})
    dummy = E.DummyExtractor(feature_dim=16)
    dummy_default = E.DummyExtractor(
        data_locations={'weights': Loc('memory', 'unused')})

    int_labels = D.ImageLabels({
        mem: [(10, 20, 1), (30, 40, 2), (0, 0, 1)],
        s3: [(5, 6, 2), (7, 8, 3)],
    })
    str_labels = D.ImageLabels({
        Loc('filesystem', '/f/1.featurevector'): [(1, 2, 'Porites'),
                                                  (3, 4, 'CCA')],
        Loc('filesystem', '/f/2.featurevector'): [(5, 6, 'Sand')],
    })
    mixed_labels = D.ImageLabels({
        url: [(100, 200, 'Acropora'), (300, 400, 7)],
    })
    ttl_int = M.TrainingTaskLabels(train=int_labels, ref=int_labels,
                                   val=int_labels)
    ttl_str = M.TrainingTaskLabels(train=str_labels, ref=mixed_labels,
                                   val=str_labels)

    FC = M.TrainClassifierMsg.FeatureCache

    def train(token, trainer, feature_cache_dir=None, **kw):
        args = dict(
            job_token=token, trainer=trainer, nbr_epochs=kw.pop('epochs', 3),
            clf_type=kw.pop('clf_type', 'MLP'),
            labels=kw.pop('labels', ttl_int),
            previous_model_locs=kw.pop('pcs', [Loc('memory', 'old1.pkl'),
                                               Loc('s3', 'old2.pkl', 'b')]),
            model_loc=Loc('filesystem', '/models/new.pkl'),
            valresult_loc=Loc('memory', 'valresult.json'))
        if feature_cache_dir is not None:
            args['feature_cache_dir'] = feature_cache_dir
        return M.TrainClassifierMsg(**args)

    extract = M.ExtractFeaturesMsg(
        job_token='extract-1', extractor=efficientnet,
        rowcols=[(0, 0), (120, 340), (2999, 3999)], image_loc=fs,
        feature_loc=mem)
    extract_vgg = M.ExtractFeaturesMsg(
        job_token='extract-vgg', extractor=vgg16, rowcols=[[1, 2]],
        image_loc=url, feature_loc=s3)
    extract_dummy = M.ExtractFeaturesMsg(
        job_token='extract-dummy', extractor=dummy, rowcols=[(5, 5)],
        image_loc=s3, feature_loc=fs)
    extract_return = M.ExtractFeaturesReturnMsg(
        extractor_loaded_remotely=False, runtime=0.25)
    train_default = train('train-1', 'minibatch')
    train_custom = train(
        'train-2', T.MiniBatchTrainer(
            batch_size=64, mlp_hidden_layer_sizes=(50, 20),
            mlp_learning_rate_init=0.01, mlp_large_data_threshold=1000,
            sgd_loss='hinge', sgd_average=False, sgd_random_state=7),
        FC.DISABLED, clf_type='LR', labels=ttl_str, pcs=[])
    train_return = M.TrainClassifierReturnMsg(
        acc=0.75, pc_accs=[0.5, 0.625], ref_accs=[0.4, 0.6, 0.7],
        runtime=12.5)
    classify_features = M.ClassifyFeaturesMsg(
        job_token='cf-1', feature_loc=s3, classifier_loc=url)
    classify_image = M.ClassifyImageMsg(
        job_token='ci-1', extractor=efficientnet_plain,
        rowcols=[(10, 10), (20, 30)], image_loc=url,
        classifier_loc=Loc('s3', 'models/1.pkl', 'b'))
    classify_return = M.ClassifyReturnMsg(
        runtime=0.5, scores=[(10, 10, [0.25, 0.75]), (20, 30, [1.0, 0.0])],
        classes=[7, 12], valid_rowcol=True)
    classify_return_legacy = M.ClassifyReturnMsg(
        runtime=0.125, scores=[(None, None, [0.5, 0.25, 0.25])],
        classes=['Porites', 'CCA', 'Sand'], valid_rowcol=False)

    jobs = {
        'extract_features': M.JobMsg('extract_features',
                                     [extract, extract_vgg, extract_dummy]),
        'train_classifier': M.JobMsg('train_classifier',
                                     [train_default, train_custom]),
        'classify_features': M.JobMsg('classify_features',
                                      [classify_features]),
        'classify_image': M.JobMsg('classify_image', [classify_image]),
    }
    returns = {
        'extract_features': [extract_return] * 3,
        'train_classifier': [train_return, train_return],
        'classify_features': [classify_return_legacy],
        'classify_image': [classify_return],
    }

    cases = [
        ('loc-filesystem', 'DataLocation', fs),
        ('loc-memory', 'DataLocation', mem),
        ('loc-s3', 'DataLocation', s3),
        ('loc-url', 'DataLocation', url),
        ('image-labels-int', 'ImageLabels', int_labels),
        ('image-labels-str', 'ImageLabels', str_labels),
        ('image-labels-mixed', 'ImageLabels', mixed_labels),
        ('extractor-efficientnet', 'FeatureExtractor', efficientnet),
        ('extractor-vgg16', 'FeatureExtractor', vgg16),
        ('extractor-dummy', 'FeatureExtractor', dummy),
        ('trainer-default', 'ClassifierTrainer', T.MiniBatchTrainer()),
        ('trainer-custom', 'ClassifierTrainer', train_custom.trainer),
        ('trainer-factory', 'ClassifierTrainer',
         T.trainer_factory('minibatch')),
        ('val-results-int', 'ValResults', D.ValResults(
            scores=[0.9, 0.5, 0.75], gt=[0, 1, 1], est=[0, 0, 1],
            classes=[3, 5])),
        ('val-results-str', 'ValResults', D.ValResults(
            scores=[0.5], gt=[0], est=[0], classes=['Sand'])),
        ('extract-efficientnet-hashes', 'ExtractFeaturesMsg', extract),
        ('extract-vgg16', 'ExtractFeaturesMsg', extract_vgg),
        ('extract-dummy', 'ExtractFeaturesMsg', extract_dummy),
        ('extract-dummy-default-dim', 'ExtractFeaturesMsg',
         M.ExtractFeaturesMsg(job_token='d2', extractor=dummy_default,
                              rowcols=[(1, 1)], image_loc=mem,
                              feature_loc=mem)),
        ('extract-return', 'ExtractFeaturesReturnMsg', extract_return),
        ('training-labels-int', 'TrainingTaskLabels', ttl_int),
        ('training-labels-str', 'TrainingTaskLabels', ttl_str),
        ('train-minibatch-name', 'TrainClassifierMsg', train_default),
        ('train-custom-trainer-disabled-cache', 'TrainClassifierMsg',
         train_custom),
        ('train-cache-auto', 'TrainClassifierMsg',
         train('train-3', T.MiniBatchTrainer(), FC.AUTO)),
        ('train-cache-str-path', 'TrainClassifierMsg',
         train('train-4', 'minibatch', '/tmp/feature-cache')),
        ('train-cache-pathlib', 'TrainClassifierMsg',
         train('train-5', 'minibatch', Path('/var/cache/features'))),
        ('train-return', 'TrainClassifierReturnMsg', train_return),
        ('classify-features', 'ClassifyFeaturesMsg', classify_features),
        ('classify-image', 'ClassifyImageMsg', classify_image),
        ('classify-return', 'ClassifyReturnMsg', classify_return),
        ('classify-return-legacy', 'ClassifyReturnMsg',
         classify_return_legacy),
    ]
    for task_name, job in jobs.items():
        cases.append((f'job-{task_name}', 'JobMsg', job))
        cases.append((f'job-return-ok-{task_name}', 'JobReturnMsg',
                      M.JobReturnMsg(original_job=job, ok=True,
                                     results=returns[task_name],
                                     error_message=None)))
    cases.append(('job-return-failed', 'JobReturnMsg', M.JobReturnMsg(
        original_job=jobs['classify_image'], ok=False, results=None,
        error_message='Traceback (most recent call last):\n  ...\n'
                      'URLDownloadError: 404')))
    return cases


# Dicts written by older PySpacer versions that 0.14.0 still reads.
LEGACY_PAYLOADS = [
    ('train-legacy-trainer-name', 'TrainClassifierMsg', {
        'job_token': 'legacy', 'trainer_name': 'minibatch', 'nbr_epochs': 1,
        'clf_type': 'LR',
        'labels': {'train': {}, 'ref': {}, 'val': {}},
        'previous_model_locs': [],
        'model_loc': {'storage_type': 'memory', 'key': 'm.pkl',
                      'bucket_name': None},
        'valresult_loc': {'storage_type': 'memory', 'key': 'v.json',
                          'bucket_name': None},
        'feature_cache_dir': 'auto'}),
    ('extractor-package-path', 'ExtractFeaturesMsg', {
        'job_token': 'pkg-path',
        'extractor': {'class_path': 'spacer.extractors.EfficientNetExtractor',
                      'data_locations': {'weights': {
                          'storage_type': 'filesystem', 'key': '/w.pt',
                          'bucket_name': None}},
                      'data_hashes': {}},
        'rowcols': [[1, 2]],
        'image_loc': {'storage_type': 'memory', 'key': 'i',
                      'bucket_name': None},
        'feature_loc': {'storage_type': 'memory', 'key': 'f',
                        'bucket_name': None}}),
]
