"""PySpacer's API beyond messages, under spacer_worker: aws, mailman,
config, storage classes CoralNet patches, patch cropping, TorchExtractor."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from spacer_worker import aws, config, mailman
from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.messages import JobMsg
from tests.client.helpers import extract_msg, write_image
from tests.reference import run_reference


def test_aws_resource_talks_to_the_s3_endpoint_setting(s3_bucket):  # noqa: F811
    aws.THREAD_LOCAL.__dict__.clear()
    s3 = aws.get_s3_resource()
    assert aws.get_s3_resource() is s3           # one per thread
    s3.Bucket(s3_bucket).put_object(Key='res.json', Body=b'{"ok": true}')
    from spacer_worker.storage import load_bytes
    loc = DataLocation('s3', 'res.json', bucket_name=s3_bucket)
    assert load_bytes(loc) == b'{"ok": true}'
    aws.THREAD_LOCAL.__dict__.clear()


def test_mailman_runs_a_job_from_a_location(tmp_path, monkeypatch):
    image = write_image(tmp_path / 'img.png')
    job = JobMsg(task_name='extract_features', tasks=[
        extract_msg(image, tmp_path / 'f.featurevector')])
    (tmp_path / 'job.json').write_text(json.dumps(job.serialize()))
    job_loc = DataLocation('filesystem', str(tmp_path / 'job.json'))
    res_loc = DataLocation('filesystem', str(tmp_path / 'res.json'))
    monkeypatch.setenv('JOB_MSG_LOC', json.dumps(job_loc.serialize()))
    monkeypatch.setenv('RES_MSG_LOC', json.dumps(res_loc.serialize()))

    assert mailman.env_job() == 1

    result = json.loads((tmp_path / 'res.json').read_text())
    assert result['ok'] is True and result['error_message'] is None
    assert (tmp_path / 'f.featurevector').exists()


def test_mailman_without_a_job_location_says_so(monkeypatch):
    monkeypatch.delenv('JOB_MSG_LOC', raising=False)
    with pytest.raises(ValueError, match='JOB_MSG_LOC'):
        mailman.env_job()


def test_url_loads_go_through_urlstorage_load(tmp_path, monkeypatch):
    """CoralNet's tests patch URLStorage.load to serve images."""
    from spacer_worker import storage
    from spacer_worker.tasks import extract_features

    image = write_image(tmp_path / 'img.png')
    served = []

    def fake_load(self, url):
        served.append(url)
        return io.BytesIO(image.read_bytes())   # PySpacer returns a BytesIO

    monkeypatch.setattr(storage.URLStorage, 'load', fake_load)
    msg = extract_msg(image, tmp_path / 'f.featurevector')
    msg.image_loc = DataLocation('url', 'https://example.org/img.png')
    extract_features(msg)
    assert served == ['https://example.org/img.png']


def test_config_functions_read_the_settings(monkeypatch, capsys):
    monkeypatch.setenv('SPACER_MAX_POINTS_PER_IMAGE', '12')
    assert config.get_config_value('MAX_POINTS_PER_IMAGE', int) == 12
    assert config.get_config_value('NOT_SET_ANYWHERE', default=None) is None
    with pytest.raises(config.ConfigError, match='required'):
        config.get_config_value('NOT_SET_ANYWHERE')
    assert config.HAS_CAFFE is False
    assert 'MAX_POINTS_PER_IMAGE' in config.CONFIGURABLE_VARS
    monkeypatch.setenv('SPACER_AWS_SECRET_ACCESS_KEY', 'abcdefghijklmnop')
    config.check()
    out = capsys.readouterr().out
    assert 'MAX_POINTS_PER_IMAGE: 12' in out
    assert 'abcdefghijklmnop' not in out


def test_caffe_stays_unsupported_with_a_clear_error():
    from spacer_worker.exceptions import ExtractorNotSupportedError
    from spacer_worker.extractors.vgg16 import load_net
    with pytest.raises(ExtractorNotSupportedError, match='Caffe'):
        load_net('net.prototxt', 'net.caffemodel')


@pytest.mark.reference
def test_crop_patches_cut_what_pyspacer_cuts(pyspacer_reference, tmp_path):
    from PIL import Image

    from spacer_worker.extractors.utils import crop_patches
    image = write_image(tmp_path / 'img.png', size=(70, 50), seed=3)
    rowcols = [(0, 0), (25, 35), (49, 69), (3, 60)]
    theirs = run_reference('''
from PIL import Image
from spacer.extractors.utils import crop_patches
patches = crop_patches(Image.open(PAYLOAD['image']),
                       [tuple(rc) for rc in PAYLOAD['rowcols']], 32)
RESULT = [p.tolist() for p in patches]
''', {'image': str(image), 'rowcols': rowcols})
    ours = crop_patches(Image.open(image), rowcols, 32)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, np.array(reference,
                                                     dtype=np.uint8))


def test_a_torch_extractor_subclass_runs_when_allowlisted(tmp_path,
                                                           monkeypatch):
    import torch

    from spacer_worker.extractors import FeatureExtractor
    from spacer_worker.extractors.utils import crop_patches
    from spacer_worker.tasks import extract_features
    from tests.compat.torch_extractor import TinyExtractor, TinyNet

    path = 'tests.compat.torch_extractor.TinyExtractor'
    net = TinyExtractor.untrained_model()
    torch.save({'net': {f'module.{k}': v for k, v in
                        net.state_dict().items()}}, tmp_path / 'tiny.pt')
    extractor = TinyExtractor(data_locations={
        'weights': DataLocation('filesystem', str(tmp_path / 'tiny.pt'))})
    msg = extract_msg(write_image(tmp_path / 'img.png'),
                      tmp_path / 'f.featurevector', extractor=extractor)

    with pytest.raises(Exception, match='EXTRA_EXTRACTOR_CLASSES'):
        FeatureExtractor.deserialize(extractor.serialize())
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES', path)
    rebuilt = FeatureExtractor.deserialize(extractor.serialize())
    assert isinstance(rebuilt, TinyExtractor)
    msg.extractor = rebuilt
    extract_features(msg)

    features = ImageFeatures.load(msg.feature_loc)
    from PIL import Image
    patches = crop_patches(Image.open(msg.image_loc.key), msg.rowcols, 16)
    batch = torch.stack([torch.from_numpy(p.transpose(2, 0, 1).copy())
                         .float() / 255 for p in patches])
    with torch.no_grad():
        expected = TinyNet.extract_features(net, batch).numpy()
    np.testing.assert_allclose(features.feature_array(), expected,
                               rtol=1e-5, atol=1e-6)


def test_storages_take_and_give_pyspacer_style_streams(tmp_path, s3_bucket):  # noqa: F811
    # PySpacer's storages store a BytesIO and load() gives one back; code
    # written for them (.getvalue(), Image.open(stream)) works here.
    from spacer_worker import storage
    for backend, key in [(storage.FileSystemStorage(), str(tmp_path / 'a')),
                         (storage.MemoryStorage(), 'a'),
                         (storage.S3Storage(s3_bucket), 'a')]:
        backend.store(key, io.BytesIO(b'stream'))
        loaded = backend.load(key)
        assert isinstance(loaded, io.BytesIO), backend
        assert loaded.read() == b'stream' and loaded.getvalue() == b'stream'
        assert backend.exists(key)


def test_aws_check_reports_settings_and_identity(s3_bucket, capsys):  # noqa: F811
    aws.aws_check()
    out = capsys.readouterr().out
    assert 'Spacer config - AWS_ACCESS_KEY_ID: Yes' in out
    assert 'Identified as ARN: arn:aws:' in out
    assert 'testing' not in out.replace('Will now', '')   # no secret values


def test_extractor_data_helpers_read_through_the_verified_cache(
        tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    # PySpacer's FeatureExtractor helpers, as a custom extractor calls
    # them: a remote file is downloaded once, then served from the cache
    # of its own location, always checked against data_hashes.
    import hashlib

    from spacer_worker import storage
    from spacer_worker.exceptions import HashMismatchError
    from spacer_worker.extractors import DummyExtractor

    monkeypatch.setenv('SPACER_EXTRACTORS_CACHE_DIR', str(tmp_path / 'cache'))
    blob = b'weights of a custom extractor'
    storage.S3Storage(s3_bucket).store('models/custom.pt', blob)
    remote = DataLocation('s3', 'models/custom.pt', bucket_name=s3_bucket)
    local = DataLocation('filesystem', str(tmp_path / 'local.pt'))
    storage.FileSystemStorage().store(local.key, b'local bytes')
    extractor = DummyExtractor(
        data_locations={'remote': remote, 'local': local},
        data_hashes={'remote': hashlib.sha256(blob).hexdigest()})

    stream, downloaded = extractor.load_datastream('remote')
    assert isinstance(stream, io.BytesIO) and stream.getvalue() == blob
    assert downloaded
    assert extractor.load_datastream('remote')[1] is False  # cached now
    path, downloaded = extractor.load_data_into_filesystem('remote')
    assert open(path, 'rb').read() == blob and not downloaded
    assert str(extractor.data_filepath_for_cache('remote')) in path
    assert extractor.load_data_into_filesystem('local') == (local.key, False)
    assert extractor.load_datastream('local')[0].getvalue() == b'local bytes'

    extractor.decache_remote_loaded_file('remote')
    assert extractor.load_datastream('remote')[1] is True  # fetched again

    tampered = DummyExtractor(data_locations={'remote': remote},
                              data_hashes={'remote': '0' * 64})
    with pytest.raises(HashMismatchError):
        tampered.load_datastream('remote')


def test_pyspacer_class_helpers_behave_as_there():
    import torch
    from sklearn.linear_model import SGDClassifier

    from spacer_worker.data_classes import DataClass
    from spacer_worker.extractors import EfficientNetExtractor
    from spacer_worker.extractors.runtime.calibration import calibrated_state
    from spacer_worker.storage import ClassifierUnpickler

    model = EfficientNetExtractor.untrained_model()
    assert isinstance(model, torch.nn.Module)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in  # PySpacer's
                           calibrated_state().items()})  # layout

    old = SGDClassifier()
    old.loss = 'log'  # as unpickled from scikit-learn < 1.1
    ClassifierUnpickler.patch_estimator(old)
    assert old.loss == 'log_loss'

    assert isinstance(DataLocation.example(), DataLocation)
    with pytest.raises(NotImplementedError):
        DataClass.example()
