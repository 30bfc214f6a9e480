"""Issue 9's attacks, each sent as a broker message to a real celery worker.

One worker (prefork, one pool process) runs under a sandbox: it may read
``inputs/``, write ``outputs/``, read and write S3 bucket ``spacer`` under
``features/`` only, and reach one private host, this test's HTTP server
(127.0.0.3/32). Next to the roots lies ``secret/``, with the worker's own
settings file. Every attack must end in a typed FAILURE, touch nothing
outside the roots, and leave the same pool process serving the next
legitimate task.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spacer_worker import exceptions
from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions.failures import error_class
from spacer_worker.extractors import DummyExtractor
from spacer_worker.messages import (
    ExtractFeaturesMsg,
    ExtractFeaturesReturnMsg,
    JobMsg,
    JobReturnMsg,
    TrainClassifierReturnMsg,
)
from tests.builders import (
    ROWCOLS,
    classify_msg,
    fs,
    make_image,
    store_non_finite,
    train_msg,
)
from tests.file_server import serve_files
from tests.services import Worker, client_app, free_port, runs

TIMEOUT = 60
LIMITS = {
    'SPACER_FILESYSTEM_MAX_BYTES': str(2 * 1024 * 1024),
    'SPACER_MESSAGE_MAX_BYTES': str(256 * 1024),
    'SPACER_MAX_LABELS_PER_TRAINING': '1000',
    'SPACER_MAX_EPOCHS': '20',
    'SPACER_MAX_HIDDEN_UNITS': '300',
    'SPACER_MAX_TASKS_PER_JOB': '5',
    'SPACER_MAX_POINTS_PER_IMAGE': '50',
    'SPACER_FEATURE_ARRAY_MAX_BYTES': str(8 * 1024 * 1024),
}


@pytest.fixture(scope='module')
def http_server():
    with serve_files() as server:
        yield server


@pytest.fixture(scope='module')
def place(tmp_path_factory, http_server):
    base = tmp_path_factory.mktemp('sandboxed')
    dirs = {name: base / name for name in ('inputs', 'outputs', 'secret')}
    for d in dirs.values():
        d.mkdir()
    secrets = dirs['secret'] / 'secrets.json'
    secrets.write_text(json.dumps({'LOG_LEVEL': 'INFO'}))
    make_image(dirs['secret'] / 'private.png', seed=7)
    make_image(dirs['inputs'] / 'image.png', seed=1)
    (dirs['inputs'] / 'escape.png').symlink_to(dirs['secret'] / 'private.png')
    (dirs['inputs'] / 'notes.txt').write_bytes(b'TOP-SECRET-TOKEN-42 ' * 10)
    (dirs['inputs'] / 'truncated.jpg').write_bytes(_truncated_jpeg())
    os.mkfifo(dirs['inputs'] / 'fifo.png')
    with open(dirs['inputs'] / 'huge.png', 'wb') as f:
        f.truncate(3 * 1024 * 1024)
    (dirs['inputs'] / 'bomb.featurevector').write_bytes(_npz_bomb())
    _understated_npz(dirs['inputs'] / 'understated.featurevector')
    with open(dirs['outputs'] / 'link-out.featurevector', 'wb'):
        pass
    (dirs['outputs'] / 'link-out.featurevector').unlink()
    (dirs['outputs'] / 'link-out.featurevector').symlink_to(
        dirs['secret'] / 'overwritten.featurevector')
    http_server.files['/image.png'] = (dirs['inputs'] / 'image.png'
                                       ).read_bytes()
    return base, dirs, secrets


def _truncated_jpeg() -> bytes:
    """An RGB JPEG cut off halfway: its top rows decode, the rest is gone."""
    from PIL import Image

    rng = np.random.default_rng(5)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (600, 800, 3), np.uint8)).save(
        out, 'JPEG', quality=90)
    data = out.getvalue()
    return data[:len(data) // 2]


def _npz_bomb() -> bytes:
    """A feature file whose 'feat' header claims 10^9 x 4096 float64 (32 TB)
    while the archive is a few hundred bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        def member(name, array, header_shape=None):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=False)
            data = buf.getvalue()
            if header_shape is not None:
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, {
                    'descr': '<f8', 'fortran_order': False,
                    'shape': header_shape})
                data = buf.getvalue() + b'\0' * 64
            zf.writestr(name + '.npy', data)
        member('meta', np.array([1, 10**9, 4096], dtype=np.int64))
        member('rows', np.zeros(4, dtype=np.uint16))
        member('cols', np.zeros(4, dtype=np.uint16))
        member('feat', np.zeros((1, 1)), header_shape=(10**9, 4096))
    return out.getvalue()


@pytest.fixture(scope='module')
def weights_cache(tmp_path_factory):
    return tmp_path_factory.mktemp('weights-cache')


@pytest.fixture(scope='module')
def worker(redis_server, place, http_server, weights_cache):
    base, dirs, secrets = place
    broker = redis_server.url(0)
    redis_server.client(0).flushdb()
    env = {
        'SPACER_RESULT_BACKEND': broker,
        'SPACER_SECRETS_PATH': str(secrets),
        'SPACER_FILESYSTEM_READ_ROOTS': str(dirs['inputs']),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(dirs['outputs']),
        'SPACER_S3_WRITE_BUCKETS': 'spacer/features',
        # Nothing listens here: a refused S3 message must not even try.
        'SPACER_S3_ENDPOINT_URL': f'http://127.0.0.1:{free_port()}',
        'SPACER_AWS_ACCESS_KEY_ID': 'test', 'SPACER_AWS_SECRET_ACCESS_KEY': 'x',
        'SPACER_URL_ALLOWED_HOSTS': '127.0.0.3/32',
        'SPACER_URL_TIMEOUT': '3',
        'SPACER_LEASE_TTL': '0',
        # The worker's own cache, outside every root.
        'SPACER_EXTRACTORS_CACHE_DIR': str(weights_cache),
        'SPACER_TORCH_DEVICE': 'cpu', 'SPACER_EXTRACT_BACKEND': 'torch',
        **LIMITS,
    }
    w = Worker('sandboxed', broker, base, queues='extract,train,classify',
               env=env).start()
    yield w
    w.stop()


@pytest.fixture(scope='module')
def app(redis_server, worker):
    with client_app(redis_server.url(0)) as app:
        yield app


QUEUES = {'spacer.extract_features': 'extract',
          'spacer.classify_image': 'extract',
          'spacer.train_classifier': 'train',
          'spacer.classify_features': 'classify'}


def send(app, name, payload, queue=None):
    if queue is None:
        queue = QUEUES.get(name) or 'extract'
    return app.send_task(name, args=[payload], queue=queue,
                         task_id=str(uuid.uuid4()))


def fails_with(app, name, payload, ours, queue=None) -> str:
    """Send, wait for the FAILURE and return its stored traceback text.

    The failure shows PySpacer's class (CoralNet sorts by it) with our
    typed error, ``ours``, as its cause in the traceback.
    """
    result = send(app, name, payload, queue)
    with pytest.raises(Exception) as info:
        result.get(timeout=TIMEOUT)
    assert result.state == 'FAILURE'
    text = result.traceback
    wire = getattr(exceptions, ours).wire_class
    assert error_class(text) == wire, text
    assert f'spacer_worker.exceptions.{ours}: ' in text, text
    assert str(info.value) in text
    return text


def _snapshot(directory: Path) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_fifo()
                     else None)
            for p in sorted(directory.iterdir())}


def _pool_pids(redis_server) -> set[int]:
    return {r['pid'] for r in runs(redis_server.client(0))
            if r['worker'] == 'sandboxed'}


@pytest.fixture
def unharmed(app, place, redis_server):
    """After the test: nothing changed outside the roots (nor in the
    read root), the worker serves a good extraction, from the same pool
    process as before."""
    base, dirs, secrets = place
    before = {name: _snapshot(dirs[name]) for name in ('secret', 'inputs')}
    pids_before = _pool_pids(redis_server)
    yield
    out = dirs['outputs'] / f'good-{uuid.uuid4().hex[:6]}.featurevector'
    good = ExtractFeaturesMsg(
        job_token='good', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=fs(dirs['inputs'] / 'image.png'),
        feature_loc=fs(out))
    ExtractFeaturesReturnMsg.deserialize(
        send(app, 'spacer.extract_features', good.serialize()
             ).get(timeout=TIMEOUT))
    assert out.is_file()
    after = {name: _snapshot(dirs[name]) for name in ('secret', 'inputs')}
    assert after == before
    assert sorted(p.name for p in base.iterdir()
                  if not p.name.startswith('worker-')) == \
        ['inputs', 'outputs', 'secret']
    if pids_before:
        assert _pool_pids(redis_server) == pids_before


def _extract(image: DataLocation, feature: DataLocation,
             rowcols=ROWCOLS) -> dict:
    return ExtractFeaturesMsg(
        job_token='attack', extractor=DummyExtractor(feature_dim=8),
        rowcols=rowcols, image_loc=image, feature_loc=feature).serialize()


# --- storage sandbox -------------------------------------------------------------

def test_feature_loc_cannot_overwrite_the_workers_settings_file(
        app, place, unharmed):
    _base, dirs, secrets = place
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'image.png'), fs(secrets)),
        'LocationNotAllowedError')
    assert 'SPACER_FILESYSTEM_WRITE_ROOTS' in text


def test_feature_loc_equal_to_image_loc_is_refused(app, place, unharmed):
    _base, dirs, _ = place
    image = dirs['outputs'] / 'own.png'
    make_image(image, seed=3)
    before = image.read_bytes()
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(image), fs(dirs['outputs'] / '.' / 'own.png')),
        'LocationNotAllowedError')
    assert 'overwrite an input' in text
    assert image.read_bytes() == before


def test_write_through_a_symlink_out_of_the_write_root_is_refused(
        app, place, unharmed):
    _base, dirs, _ = place
    fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'image.png'),
        fs(dirs['outputs'] / 'link-out.featurevector')),
        'LocationNotAllowedError')
    assert not (dirs['secret'] / 'overwritten.featurevector').exists()


def test_s3_outside_the_allowed_prefix_is_refused_before_any_request(
        app, place, unharmed):
    _base, dirs, _ = place
    image = fs(dirs['inputs'] / 'image.png')
    for key, bucket in (('images/photo.jpg', 'spacer'),
                        ('features-old/x.fv', 'spacer'),
                        ('features/../images/photo.jpg', 'spacer'),
                        ('features/x.fv', 'prod')):
        text = fails_with(app, 'spacer.extract_features', _extract(
            image, DataLocation('s3', key, bucket_name=bucket)),
            'LocationNotAllowedError')
        assert f's3://{bucket}/{key}' in text


@pytest.mark.parametrize('path', ['/etc/shadow', '/etc/passwd', '/dev/zero'])
def test_reading_outside_the_roots_is_refused_without_echoing_the_file(
        app, place, unharmed, path):
    _base, dirs, _ = place
    started = time.monotonic()
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(path), fs(dirs['outputs'] / 'x.featurevector')),
        'LocationNotAllowedError')
    assert time.monotonic() - started < 20
    assert 'SPACER_FILESYSTEM_READ_ROOTS' in text
    assert 'root:' not in text and 'bytes' not in text


def test_a_symlink_out_of_the_read_root_is_not_followed(app, place, unharmed):
    _base, dirs, _ = place
    fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'escape.png'), fs(dirs['outputs'] / 'e.fv')),
        'LocationNotAllowedError')


def test_only_regular_files_are_read_and_a_fifo_does_not_hang(
        app, place, unharmed):
    _base, dirs, _ = place
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'fifo.png'), fs(dirs['outputs'] / 'f.fv')),
        'LocationNotAllowedError')
    assert 'regular file' in text


def test_an_unreadable_file_in_the_root_is_not_echoed(app, place, unharmed):
    _base, dirs, _ = place
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'notes.txt'), fs(dirs['outputs'] / 'n.fv')),
        'ImageDecodeError')
    assert 'TOP-SECRET' not in text and '200' not in text


def test_a_truncated_jpeg_fails_typed_though_its_points_are_in_rows_it_has(
        app, place, unharmed):
    # JPEGs are decoded as extraction reaches their rows; the task decodes
    # to the end all the same (here the extractor reads no pixel at all).
    _base, dirs, _ = place
    out = dirs['outputs'] / 'truncated.fv'
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'truncated.jpg'), fs(out), rowcols=[[5, 5]]),
        'ImageDecodeError')
    assert "truncated.jpg' (JPEG 800 x 600) is corrupt or truncated" in text
    assert not out.exists()


def test_feature_cache_dir_outside_the_write_roots_is_refused(
        app, place, unharmed):
    _base, dirs, _ = place
    msg = train_msg(dirs['outputs']).serialize()
    msg['feature_cache_dir'] = str(dirs['secret'])
    fails_with(app, 'spacer.train_classifier', msg, 'LocationNotAllowedError')


def test_previous_model_outside_the_roots_is_refused(app, place, unharmed):
    _base, dirs, secrets = place
    msg = train_msg(dirs['outputs']).serialize()
    msg['previous_model_locs'] = [fs(secrets).serialize()]
    fails_with(app, 'spacer.train_classifier', msg, 'LocationNotAllowedError')


def test_memory_storage_is_refused_by_default(app, place, unharmed):
    _base, dirs, _ = place
    fails_with(app, 'spacer.extract_features', _extract(
        DataLocation('memory', 'image.png'), fs(dirs['outputs'] / 'm.fv')),
        'LocationNotAllowedError')


# --- URLs ------------------------------------------------------------------------

def test_internal_urls_all_fail_alike(app, place, http_server, redis_server,
                                      unharmed):
    _base, dirs, _ = place
    port = http_server.server_address[1]
    targets = [
        'http://169.254.169.254/latest/meta-data/iam/',   # cloud metadata
        f'http://localhost:{redis_server.port}/',          # Redis, by name
        f'http://127.0.0.2:{redis_server.port}/',          # loopback, other
        'http://[::1]:6379/',
        'http://10.0.0.1/',                                # private
        f'http://127.0.0.1:{redis_server.port}/',          # Redis
        f'http://127.0.0.3:{port}/redirect?to=http://169.254.169.254/',
        f'http://127.0.0.3:{port}/redirect?to=http://127.0.0.1:{port}/x',
        f'http://127.0.0.3:{free_port()}/closed',          # refused
        f'http://127.0.0.3:{port}/missing.png',            # 404
    ]
    texts = set()
    for url in targets:
        text = fails_with(app, 'spacer.extract_features', _extract(
            DataLocation('url', url), fs(dirs['outputs'] / 'u.fv')),
            'URLDownloadError')
        texts.add(text.replace(repr(url), '<url>'))
    # Refused, unreachable and not found read the same, traceback and
    # all: the worker is no port scanner.
    assert len(texts) == 1, texts
    [text] = texts
    for word in ('refused', '404', 'imed out', 'public', 'resolve'):
        assert word not in text
    # The worker's log keeps the reason.
    assert 'not a public address' in _worker_log(place)


def test_an_allowed_private_host_still_works(app, place, http_server,
                                             unharmed):
    _base, dirs, _ = place
    port = http_server.server_address[1]
    out = dirs['outputs'] / 'via-url.fv'
    ExtractFeaturesReturnMsg.deserialize(send(
        app, 'spacer.extract_features', _extract(
            DataLocation('url', f'http://127.0.0.3:{port}/image.png'),
            fs(out))).get(timeout=TIMEOUT))
    assert out.is_file()


def _worker_log(place) -> str:
    base, _dirs, _ = place
    return (base / 'worker-sandboxed.log').read_text(errors='replace')


# --- weights cache -----------------------------------------------------------------

def _url_weights_extraction(port: int, dirs: dict, folder: str,
                            out: str) -> dict:
    """An extraction whose weights come from this test's HTTP server."""
    from spacer_worker.extractors import EfficientNetExtractor
    return ExtractFeaturesMsg(
        job_token=folder, rowcols=ROWCOLS[:2],
        extractor=EfficientNetExtractor(data_locations={'weights': (
            DataLocation('url', f'http://127.0.0.3:{port}/{folder}/'
                                f'efficientnet_b0_ver1.pt'))}),
        image_loc=fs(dirs['inputs'] / 'image.png'),
        feature_loc=fs(dirs['outputs'] / out)).serialize()


def _served_weights(http_server, tmp_path_factory, folder: str,
                    change=None) -> None:
    """Calibrated weights, their state dict changed by ``change``, served
    at ``/folder/efficientnet_b0_ver1.pt``."""
    from spacer_worker.extractors.runtime import pt_reader, pt_writer
    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    path = tmp_path_factory.mktemp(folder) / 'efficientnet_b0_ver1.pt'
    make_calibrated_weights(path, seed=0)
    if change is not None:
        content = pt_reader.load(path.read_bytes())
        change(content['net'])
        path.write_bytes(pt_writer.save(content))
    http_server.files[f'/{folder}/efficientnet_b0_ver1.pt'] = path.read_bytes()


def test_the_weights_cache_cannot_be_poisoned_across_locations(
        app, place, http_server, tmp_path_factory, unharmed):
    _base, dirs, _ = place
    port = http_server.server_address[1]
    _served_weights(http_server, tmp_path_factory, 'prod')
    http_server.files['/evil/efficientnet_b0_ver1.pt'] = b'poisoned weights'

    def extraction(folder: str, out: str) -> dict:
        return _url_weights_extraction(port, dirs, folder, out)

    # Given an attacker's message that fills the cache with its own file of
    # the production file's name (no data_hashes),
    fails_with(app, 'spacer.extract_features', extraction('evil', 'e.fv'),
               'WeightsLoadError')
    # a production message naming the genuine location, also without
    # hashes, gets the genuine weights, downloaded for it,
    returned = ExtractFeaturesReturnMsg.deserialize(send(
        app, 'spacer.extract_features', extraction('prod', 'p.fv')
    ).get(timeout=180))
    assert returned.extractor_loaded_remotely is True
    assert (dirs['outputs'] / 'p.fv').is_file()
    # (from its own URL: the cached copy of the other one was not used).
    assert http_server.hits.count('/prod/efficientnet_b0_ver1.pt') == 1


def _poison(state) -> None:
    # Every feature would be NaN, and the failure would surface only when
    # CoralNet trains on them.
    state['_blocks.3._bn1.running_var'][5] = float('nan')


def _inflate(state) -> None:
    # Finite, but features overflow float32 (3.4e38) even when recomputed
    # in float64 (~5e38): the file would hold infinities.
    state['_bn1.weight'] *= np.float32(3e38)


@pytest.mark.parametrize('change, error, said', [
    (_poison, 'WeightsLoadError', 'NaN or infinite values in 1 tensor(s) '
                                  '(first: _blocks.3._bn1.running_var'),
    (_inflate, 'NonFiniteFeaturesError', 'even in float64'),
], ids=['nan', 'beyond-float32'])
def test_weights_giving_non_finite_features_fail_before_any_write(
        app, place, http_server, tmp_path_factory, unharmed, change, error,
        said):
    _base, dirs, _ = place
    folder = change.__name__.strip('_')
    _served_weights(http_server, tmp_path_factory, folder, change)
    out = dirs['outputs'] / f'{folder}.fv'
    # Given a message naming such weights,
    text = fails_with(app, 'spacer.extract_features', _url_weights_extraction(
        http_server.server_address[1], dirs, folder, out.name), error)
    # then the task fails saying why, and no feature file exists.
    assert said in text
    assert not out.exists()


# --- bounds ----------------------------------------------------------------------

def test_a_file_over_the_read_limit_is_refused_before_reading(
        app, place, unharmed):
    _base, dirs, _ = place
    text = fails_with(app, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'huge.png'), fs(dirs['outputs'] / 'h.fv')),
        'ReadLimitError')
    assert 'FILESYSTEM_MAX_BYTES' in text


def test_npz_member_shapes_are_checked_before_inflating(app, place, unharmed):
    _base, dirs, _ = place
    text = fails_with(app, 'spacer.classify_features', classify_msg(
        dirs['inputs'] / 'bomb.featurevector',
        dirs['inputs'] / 'model.pkl').serialize(), 'ReadLimitError')
    assert 'FEATURE_ARRAY_MAX_BYTES' in text


def _understated_npz(path) -> None:
    """A feature file whose zip directory says 'feat' inflates to 1000
    bytes while its deflate stream holds 51 MB (an inflate bomb that lies
    about its size, not in its .npy header)."""
    rows = 5000
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in (('meta', np.array([1, rows, 1280])),
                            ('rows', np.arange(rows, dtype=np.uint16)),
                            ('cols', np.zeros(rows, dtype=np.uint16)),
                            ('feat', np.zeros((rows, 1280)))):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=False)
            zf.writestr(name + '.npy', buf.getvalue())
        info = zf.getinfo('feat.npy')
    data = bytearray(out.getvalue())
    lie = (1000).to_bytes(4, 'little')
    data[info.header_offset + 22:info.header_offset + 26] = lie  # local
    central = data.find(b'PK\x01\x02')
    while data[central + 46:central + 54] != b'feat.npy':
        central = data.find(b'PK\x01\x02', central + 4)
    data[central + 24:central + 28] = lie                         # directory
    path.write_bytes(bytes(data))


def test_an_npz_member_that_understates_its_size_is_inflated_no_further(
        app, place, unharmed):
    _base, dirs, _ = place
    text = fails_with(app, 'spacer.classify_features', classify_msg(
        dirs['inputs'] / 'understated.featurevector',
        dirs['inputs'] / 'model.pkl').serialize(), 'FeatureFileError')
    assert 'damaged npz' in text


def test_points_are_counted_before_the_image_is_fetched(
        app, place, http_server, unharmed):
    _base, dirs, _ = place
    port = http_server.server_address[1]
    hits = len(http_server.hits)
    rowcols = [(i % 60, i // 60) for i in range(51)]
    text = fails_with(app, 'spacer.extract_features', _extract(
        DataLocation('url', f'http://127.0.0.3:{port}/image.png'),
        fs(dirs['outputs'] / 'p.fv'), rowcols), 'DataLimitError')
    assert "that's larger than the max allowed of 50" in text
    assert len(http_server.hits) == hits


def test_a_message_over_the_size_limit_is_refused(app, place, unharmed):
    _base, dirs, _ = place
    payload = _extract(fs(dirs['inputs'] / 'image.png'),
                       fs(dirs['outputs'] / 's.fv'))
    payload['job_token'] = 'x' * (300 * 1024)
    text = fails_with(app, 'spacer.extract_features', payload,
                      'MessageLimitError')
    assert 'MESSAGE_MAX_BYTES' in text


@pytest.mark.parametrize('class_path, ours', [
    # A module of ours that acts on import (it runs the CLI): not loaded,
    # so not looked into.
    ('spacer.cli.__main__.Extractor', 'UnknownClassError'),
    # A name our loaded module exports lazily (its lookup would import
    # torch_extractors): read from the module's own dict, so not found.
    ('spacer.extractors.efficientnet.TorchExtractor', 'ClassNotFoundError'),
])
def test_a_refused_class_path_is_classified_without_importing(
        app, place, unharmed, class_path, ours):
    """Telling which of PySpacer's errors a refusal stands for reads only
    modules the worker already loaded: the message runs nothing, and the
    pool process that refused it serves the next job (``unharmed``)."""
    _base, dirs, _ = place
    payload = _extract(fs(dirs['inputs'] / 'image.png'),
                       fs(dirs['outputs'] / 'refused.fv'))
    payload['extractor'] = {'class_path': class_path}
    text = fails_with(app, 'spacer.extract_features', payload, ours)
    assert 'is not allowed' in text
    assert not (dirs['outputs'] / 'refused.fv').exists()


@pytest.mark.parametrize('change, setting', [
    ({'nbr_epochs': 21}, 'MAX_EPOCHS'),
    ({'trainer': {'class_path': 'spacer.train_classifier.MiniBatchTrainer',
                  'mlp_hidden_layer_sizes': [200, 101]}}, 'MAX_HIDDEN_UNITS'),
])
def test_training_bounds(app, place, unharmed, change, setting):
    _base, dirs, _ = place
    msg = train_msg(dirs['outputs']).serialize() | change
    text = fails_with(app, 'spacer.train_classifier', msg,
                      'MessageLimitError')
    assert setting in text


def test_feature_files_holding_nan_fail_the_training_by_name(app, place,
                                                              unharmed):
    _base, dirs, _ = place
    folder = dirs['outputs'] / 'nan-training'
    folder.mkdir()
    msg = train_msg(folder)
    # Given a training whose one feature file holds a NaN vector,
    loc = next(iter(msg.labels.train.keys()))
    store_non_finite(loc, 4, 0)
    text = fails_with(app, 'spacer.train_classifier', msg.serialize(),
                      'FeatureFileError')
    # then it fails naming that file (not scikit-learn's bare "Input X
    # contains NaN"), and stores no model.
    assert f"{Path(loc.key).name}': 1 of 10 feature vector(s)" in text
    assert not (folder / 'model.pkl').exists()


def test_feature_files_holding_nan_fail_the_scoring_by_name(app, place,
                                                             unharmed):
    _base, dirs, _ = place
    folder = dirs['outputs'] / 'nan-scoring'
    folder.mkdir()
    msg = train_msg(folder)
    send(app, 'spacer.train_classifier', msg.serialize()).get(timeout=TIMEOUT)
    # Given a feature file with a NaN in its first vector,
    broken = folder / 'broken.featurevector'
    store_non_finite(next(iter(msg.labels.val.keys())), 0, 1, fs(broken))
    # then scoring it fails naming the file and the vector.
    text = fails_with(app, 'spacer.classify_features', classify_msg(
        broken, folder / 'model.pkl').serialize(), 'FeatureFileError')
    assert "broken.featurevector': 1 of" in text and '(first: vector 0)' in text


def test_labels_per_training_are_bounded(app, place, unharmed):
    _base, dirs, _ = place
    msg = train_msg(dirs['outputs']).serialize()
    # 10 images x 10 points = 100 annotations; multiply the train set.
    train = msg['labels']['train']
    for key in list(train):
        train[key] = train[key] * 120
    text = fails_with(app, 'spacer.train_classifier', msg,
                      'MessageLimitError')
    assert 'MAX_LABELS_PER_TRAINING' in text


def test_tasks_per_job_are_bounded(app, place, unharmed):
    _base, dirs, _ = place
    one = ExtractFeaturesMsg.deserialize(_extract(
        fs(dirs['inputs'] / 'image.png'), fs(dirs['outputs'] / 'j.fv')))
    job = JobMsg(task_name='extract_features', tasks=[one] * 6)
    returned = JobReturnMsg.deserialize(send(
        app, 'spacer.process_job', job.serialize(), 'extract'
    ).get(timeout=TIMEOUT))
    assert returned.ok is False
    last = returned.error_message.strip().splitlines()[-1]
    assert last.startswith('spacer.exceptions.DataLimitError: ')
    assert 'MAX_TASKS_PER_JOB' in last
    assert 'spacer_worker.exceptions.MessageLimitError: ' in \
        returned.error_message


def test_a_job_cannot_write_one_tasks_output_over_anothers_input(
        app, place, unharmed):
    _base, dirs, _ = place
    image = dirs['outputs'] / 'job-src.png'
    make_image(image, seed=4)
    before = image.read_bytes()
    first = ExtractFeaturesMsg.deserialize(_extract(
        fs(image), fs(dirs['outputs'] / 'job.fv')))
    second = ExtractFeaturesMsg.deserialize(_extract(
        fs(dirs['inputs'] / 'image.png'), fs(image)))
    returned = JobReturnMsg.deserialize(send(
        app, 'spacer.process_job',
        JobMsg(task_name='extract_features',
               tasks=[first, second]).serialize(), 'extract'
    ).get(timeout=TIMEOUT))
    assert returned.ok is False
    assert error_class(returned.error_message) == 'PermissionError'
    assert 'spacer_worker.exceptions.LocationNotAllowedError: ' in \
        returned.error_message
    assert image.read_bytes() == before
    assert not (dirs['outputs'] / 'job.fv').exists()


# --- legitimate work still round-trips ---------------------------------------------

def test_legitimate_training_and_classification_round_trip(
        app, place, unharmed):
    _base, dirs, _ = place
    msg = train_msg(dirs['outputs'])
    TrainClassifierReturnMsg.deserialize(
        send(app, 'spacer.train_classifier', msg.serialize()
             ).get(timeout=TIMEOUT))
    feature = next(iter(msg.labels.val.keys()))
    result = send(app, 'spacer.classify_features', classify_msg(
        feature.key, dirs['outputs'] / 'model.pkl').serialize()
    ).get(timeout=TIMEOUT)
    assert len(result['scores']) == 10
    assert set(result['classes']) == {1, 2, 3}


# --- done when: the attacked worker still works as a fresh one ----------------------

def test_the_attacked_worker_extracts_and_classifies_as_a_fresh_one(
        app, place, worker, http_server, redis_server, tmp_path_factory,
        unharmed):
    # Last in this module: the worker has run every attack above. It must
    # still give the very bytes and scores a worker that never saw one
    # gives, on the same settings.
    import hashlib

    base, dirs, _ = place
    _served_weights(http_server, tmp_path_factory, 'same')
    sha256 = hashlib.sha256(
        http_server.files['/same/efficientnet_b0_ver1.pt']).hexdigest()
    port = http_server.server_address[1]
    model = dirs['outputs'] / 'model.pkl'
    if not model.is_file():
        TrainClassifierReturnMsg.deserialize(send(
            app, 'spacer.train_classifier',
            train_msg(dirs['outputs']).serialize()).get(timeout=TIMEOUT))
    feature = dirs['outputs'] / 'val0.featurevector'

    def work(tag: str, queue: str | None) -> tuple[bytes, list]:
        msg = _url_weights_extraction(port, dirs, 'same', f'same-{tag}.fv')
        msg['extractor']['data_hashes'] = {'weights': sha256}
        ExtractFeaturesReturnMsg.deserialize(send(
            app, 'spacer.extract_features', msg, queue).get(timeout=180))
        scores = send(app, 'spacer.classify_features', classify_msg(
            feature, model).serialize(), queue).get(timeout=TIMEOUT)
        return (dirs['outputs'] / f'same-{tag}.fv').read_bytes(), \
            scores['scores']

    attacked = work('attacked', None)
    env = {k: v for k, v in worker.env.items() if k.startswith('SPACER_')}
    env['SPACER_EXTRACTORS_CACHE_DIR'] = str(tmp_path_factory.mktemp('fresh'))
    fresh = Worker('fresh', redis_server.url(0), base, queues='fresh',
                   env=env).start()
    try:
        again = work('fresh', 'fresh')
    finally:
        fresh.stop()
    assert again == attacked
