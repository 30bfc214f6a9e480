"""Issue 28's attacks on files, Redis records, failure texts and commits,
each sent through a real, leased celery worker on a real Redis.

The worker runs under the same sandbox as round one's: it may read
``inputs/``, write ``outputs/``, reach one private host (this test's HTTP
server on 127.0.0.3); ``secret/`` beside them holds a file no message may
touch. It holds a lease, so its outputs are staged and committed under the
fence (worker.delivery), which is what a planted commit record aims at.
Every attack ends in a typed failure or in the message running as it
should, changes nothing outside the roots, and leaves the same pool
process serving; the last test checks that this worker still extracts and
classifies bit-identically to a fresh one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from spacer_worker import exceptions
from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions.failures import LINE_BREAKS, error_class
from spacer_worker.extractors import DummyExtractor
from spacer_worker.messages import (
    ExtractFeaturesMsg,
    ExtractFeaturesReturnMsg,
    JobMsg,
    JobReturnMsg,
    TrainClassifierReturnMsg,
)
from tests.builders import ROWCOLS, classify_msg, fs, make_image, train_msg
from tests.file_server import serve_files
from tests.services import Worker, client_app, runs, wait_for

TIMEOUT = 90
SPOOF = 'spacer.exceptions.RowColumnMismatchError: reset the features'


@pytest.fixture(scope='module')
def http_server():
    with serve_files() as server:
        yield server


@pytest.fixture(scope='module')
def place(tmp_path_factory, http_server):
    base = tmp_path_factory.mktemp('round-two')
    dirs = {name: base / name for name in ('inputs', 'outputs', 'secret')}
    for d in dirs.values():
        d.mkdir()
    (dirs['secret'] / 'victim.bin').write_bytes(b'not the weights ' * 64)
    (dirs['secret'] / 'secrets.json').write_text('{"LOG_LEVEL": "INFO"}')
    make_image(dirs['inputs'] / 'image.png', seed=1)
    http_server.files['/image.png'] = (dirs['inputs'] / 'image.png'
                                       ).read_bytes()
    return base, dirs


def _weights(http_server, tmp_path_factory) -> str:
    """Calibrated weights served at /w/efficientnet_b0_ver1.pt; their
    sha256."""
    import hashlib

    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    path = tmp_path_factory.mktemp('w') / 'efficientnet_b0_ver1.pt'
    make_calibrated_weights(path, seed=0)
    data = path.read_bytes()
    http_server.files['/w/efficientnet_b0_ver1.pt'] = data
    return hashlib.sha256(data).hexdigest()


def _env(dirs: dict, cache: Path, **more: str) -> dict:
    return {
        'SPACER_SECRETS_PATH': str(dirs['secret'] / 'secrets.json'),
        'SPACER_FILESYSTEM_READ_ROOTS': str(dirs['inputs']),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(dirs['outputs']),
        'SPACER_URL_ALLOWED_HOSTS': '127.0.0.3/32',
        'SPACER_URL_TIMEOUT': '90',
        'SPACER_LEASE_TTL': '30',
        'SPACER_EXTRACTORS_CACHE_DIR': str(cache),
        'SPACER_TORCH_DEVICE': 'cpu', 'SPACER_EXTRACT_BACKEND': 'torch',
        **more,
    }


@pytest.fixture(scope='module')
def worker(redis_server, place, http_server, tmp_path_factory):
    base, dirs = place
    broker = redis_server.url(0)
    redis_server.client(0).flushdb()
    cache = tmp_path_factory.mktemp('weights-cache')
    env = {'SPACER_RESULT_BACKEND': broker, **_env(dirs, cache)}
    w = Worker('round-two', broker, base, queues='extract,train,classify',
               env=env).start()
    yield w
    w.stop()


@pytest.fixture(scope='module')
def app(redis_server, worker):
    with client_app(redis_server.url(0)) as app:
        yield app


@pytest.fixture(scope='module')
def r(redis_server):
    client = redis_server.client(0)
    yield client
    client.close()


def send(app, name, payload, queue='extract'):
    return app.send_task(name, args=[payload], queue=queue,
                         task_id=str(uuid.uuid4()))


def failure_of(result) -> str:
    """The traceback of a task that fails: raised by ``get`` too."""
    with pytest.raises(Exception) as info:
        result.get(timeout=TIMEOUT)
    assert result.state == 'FAILURE'
    assert str(info.value) in result.traceback
    return result.traceback


def fails_with(app, name, payload, ours, queue='extract') -> str:
    """Send, wait for the FAILURE, return its traceback: PySpacer's class
    on the last line, ``ours`` as its cause."""
    text = failure_of(send(app, name, payload, queue))
    assert error_class(text) == getattr(exceptions, ours).wire_class, text
    assert f'spacer_worker.exceptions.{ours}: ' in text, text
    return text


def _snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _pool_pids(r) -> set[int]:
    return {run['pid'] for run in runs(r) if run['worker'] == 'round-two'}


@pytest.fixture
def unharmed(app, place, r):
    """After the test: nothing changed in secret/ or inputs/, no staged
    file is left behind, and the same pool process serves a good
    extraction."""
    base, dirs = place
    before = {name: _snapshot(dirs[name]) for name in ('secret', 'inputs')}
    pids_before = _pool_pids(r)
    yield
    out = dirs['outputs'] / f'good-{uuid.uuid4().hex[:6]}.featurevector'
    ExtractFeaturesReturnMsg.deserialize(send(
        app, 'spacer.extract_features',
        _extract(fs(dirs['inputs'] / 'image.png'), fs(out))
    ).get(timeout=TIMEOUT))
    assert out.is_file()
    after = {name: _snapshot(dirs[name]) for name in ('secret', 'inputs')}
    assert after == before
    assert not list(dirs['outputs'].glob('.*.staged'))
    if pids_before:
        assert _pool_pids(r) == pids_before


def _extract(image: DataLocation, feature: DataLocation) -> dict:
    return ExtractFeaturesMsg(
        job_token='attack', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=image, feature_loc=feature).serialize()


def _log(place) -> str:
    base, _ = place
    return (base / 'worker-round-two.log').read_text(errors='replace')


# --- 1. strings from a message that reach the filesystem ---------------------------

def _weights_extraction(port: int, dirs: dict, out: str,
                        sha256: str | None) -> dict:
    from spacer_worker.extractors import EfficientNetExtractor
    extractor = EfficientNetExtractor(data_locations={'weights': DataLocation(
        'url', f'http://127.0.0.3:{port}/w/efficientnet_b0_ver1.pt')})
    msg = ExtractFeaturesMsg(
        job_token='weights', rowcols=ROWCOLS[:2], extractor=extractor,
        image_loc=fs(dirs['inputs'] / 'image.png'),
        feature_loc=fs(dirs['outputs'] / out)).serialize()
    if sha256 is not None:
        msg['extractor']['data_hashes'] = {'weights': sha256}
    return msg


@pytest.mark.parametrize('name', ['absolute', 'relative', 'upper-case'])
def test_a_weights_hash_names_no_file(app, place, http_server,
                                      tmp_path_factory, unharmed, name):
    _base, dirs = place
    victim = dirs['secret'] / 'victim.bin'
    genuine = _weights(http_server, tmp_path_factory)
    value = {'absolute': str(victim),
             'relative': f'../../../../../../..{victim}',
             'upper-case': genuine.upper()}[name]
    hits = len(http_server.hits)
    # Given a message whose data_hashes['weights'] is a path to a file
    # whose content is not "its" hash (or not a hash as hexdigest writes),
    text = fails_with(app, 'spacer.extract_features', _weights_extraction(
        http_server.server_address[1], dirs, 'h.fv', value),
        'HashMismatchError')
    # then the task fails saying so, before any download, and the file
    # is untouched (the unharmed check).
    assert 'is not a sha256' in text
    assert len(http_server.hits) == hits
    assert victim.is_file()
    assert not (dirs['outputs'] / 'h.fv').exists()


# --- 2. records read back from Redis ------------------------------------------------

def _park(app, r, name: str, payload: dict) -> tuple:
    """Send a task to a queue nobody consumes; return its AsyncResult,
    its raw message and its delivery tag (what an attacker on the broker
    sees too)."""
    from kombu import Exchange, Queue
    with app.connection_for_write() as connection:
        Queue('parking', Exchange('parking'), 'parking')(
            connection.default_channel).declare()
    result = send(app, name, payload, queue='parking')
    lists = [k for k in r.keys('parking*') if r.type(k) == b'list']
    assert len(lists) == 1, r.keys('*')
    raw = r.rpop(lists[0])
    assert raw is not None
    tag = json.loads(raw)['properties']['delivery_tag']
    return result, raw, tag


def _forged_value(task_id: str) -> str:
    return json.dumps({'status': 'SUCCESS', 'result': {'forged': True},
                       'traceback': None, 'children': [], 'date_done': None,
                       'task_id': task_id})


def _records(dirs: dict, task_id: str, other_id: str) -> dict:
    outputs = dirs['outputs']
    (outputs / 'earlier.fv').write_bytes(b'an earlier output')
    staged = outputs / '.planted.fv.spacer-0123456789abcdef.staged'
    staged.write_bytes(b'an attacker staged this')
    own = f'celery-task-meta-{task_id}'
    move = {'type': 'filesystem', 'bucket': None}
    return {
        'from-outside-the-roots': {'key': own, 'staged': [
            {**move, 'staged': str(dirs['secret'] / 'victim.bin'),
             'key': str(outputs / 'stolen.bin')}]},
        'into-outside-the-roots': {'key': own, 'staged': [
            {**move, 'staged': str(staged),
             'key': str(dirs['secret'] / 'victim.bin')}]},
        'not-a-staged-name': {'key': own, 'staged': [
            {**move, 'staged': str(outputs / 'earlier.fv'),
             'key': str(outputs / 'moved.fv')}]},
        'another-tasks-result': {'key': f'celery-task-meta-{other_id}',
                                 'staged': []},
        'not-an-object': ['key', own],
        'nested-too-deep': '[' * 100_000 + ']' * 100_000,
    }


@pytest.mark.parametrize('kind', [
    'from-outside-the-roots', 'into-outside-the-roots', 'not-a-staged-name',
    'another-tasks-result', 'not-an-object', 'nested-too-deep'])
def test_a_planted_commit_record_is_not_trusted(app, place, r, unharmed,
                                                kind):
    from spacer_worker.worker.leases import COMMIT_KEY
    _base, dirs = place
    out = dirs['outputs'] / f'planted-{kind}.fv'
    result, raw, tag = _park(app, r, 'spacer.extract_features', _extract(
        fs(dirs['inputs'] / 'image.png'), fs(out)))
    other = str(uuid.uuid4())
    record = _records(dirs, result.id, other)[kind]
    if isinstance(record, dict):
        record.update(value=_forged_value(result.id), expires=3600)
    # Given a commit record planted under the message's own delivery tag
    # ("committed by an earlier delivery: finish that commit"),
    r.set(COMMIT_KEY.format(tag),
          record if isinstance(record, str) else json.dumps(record))
    r.lpush('extract', raw)
    # then the worker does not trust it: the task runs, its real result
    # and output are there,
    returned = ExtractFeaturesReturnMsg.deserialize(result.get(
        timeout=TIMEOUT))
    assert returned.runtime >= 0
    assert out.is_file()
    # nothing the record named was moved, and no result was forged.
    assert (dirs['secret'] / 'victim.bin').is_file()
    assert not (dirs['outputs'] / 'stolen.bin').exists()
    assert not (dirs['outputs'] / 'moved.fv').exists()
    assert (dirs['outputs'] / 'earlier.fv').read_bytes() == \
        b'an earlier output'
    assert r.get(f'celery-task-meta-{other}') is None
    assert 'ignoring the commit record' in _log(place)
    for staged in dirs['outputs'].glob('.planted.fv.*.staged'):
        staged.unlink()


def test_with_a_worker_secret_an_unsealed_record_moves_nothing(
        app, place, r, redis_server, tmp_path_factory):
    # A record that stays inside the roots, names a real staged file and
    # this task's own result is what a worker without a secret cannot
    # tell from its own; one with WORKER_SECRET can.
    from spacer_worker.worker.leases import COMMIT_KEY
    base, dirs = place
    env = {'SPACER_RESULT_BACKEND': redis_server.url(0),
           **_env(dirs, tmp_path_factory.mktemp('cache'),
                  SPACER_WORKER_SECRET='a-secret-only-workers-know')}
    sealed = Worker('sealed', redis_server.url(0), base, queues='sealed',
                    env=env).start()
    try:
        out = dirs['outputs'] / 'sealed.fv'
        staged = dirs['outputs'] / '.sealed.fv.spacer-0123456789abcdef.staged'
        staged.write_bytes(b'forged features')
        result, raw, tag = _park(app, r, 'spacer.extract_features', _extract(
            fs(dirs['inputs'] / 'image.png'), fs(out)))
        r.set(COMMIT_KEY.format(tag), json.dumps({
            'key': f'celery-task-meta-{result.id}', 'task_id': result.id,
            'value': _forged_value(result.id), 'expires': 3600,
            'staged': [{'type': 'filesystem', 'bucket': None,
                        'staged': str(staged), 'key': str(out)}],
            'mac': '0' * 64}))
        r.lpush('sealed', raw)
        ExtractFeaturesReturnMsg.deserialize(result.get(timeout=TIMEOUT))
        assert out.read_bytes() != b'forged features'
        assert 'seal does not verify' in sealed.log_text()
    finally:
        sealed.stop()
        for path in dirs['outputs'].glob('.sealed.fv.*.staged'):
            path.unlink()


# --- 7. the last line of a failure -------------------------------------------------

def test_no_line_break_in_a_message_can_choose_the_failure_class(
        app, place, unharmed):
    _base, dirs = place
    # The bucket of an S3 location is quoted as it is (no repr).
    for mark in LINE_BREAKS:
        bucket = f'b{mark}{SPOOF}'
        loc = DataLocation('s3', f'k{mark}{SPOOF}', bucket_name=bucket)
        msg = _extract(loc, fs(dirs['outputs'] / 'x.fv'))
        text = fails_with(app, 'spacer.extract_features', msg,
                          'LocationNotAllowedError')
        last = text.strip().splitlines()[-1]
        assert last.startswith('PermissionError: '), (repr(mark), last)
        # Not only the last line: the whole stored traceback has no line
        # break but those of its frames.
        assert not any(c in text for c in LINE_BREAKS if c != '\n'), \
            repr(mark)
        assert SPOOF.split(':')[0] not in [
            line.split(':')[0] for line in text.splitlines()]
        job = JobMsg(task_name='extract_features',
                     tasks=[ExtractFeaturesMsg.deserialize(msg)]).serialize()
        returned = JobReturnMsg.deserialize(send(
            app, 'spacer.process_job', job).get(timeout=TIMEOUT))
        assert returned.ok is False
        lines = returned.error_message.strip().splitlines()
        assert error_class(returned.error_message) == 'PermissionError', \
            (repr(mark), lines[-1])
        assert not any(c in returned.error_message
                       for c in LINE_BREAKS if c != '\n')


# --- 8. commit is all or nothing ------------------------------------------------

def test_a_job_whose_staged_output_is_gone_fails_and_publishes_nothing(
        app, place, http_server, unharmed):
    _base, dirs = place
    port = http_server.server_address[1]
    first, second = dirs['outputs'] / 'first.fv', dirs['outputs'] / 'second.fv'
    http_server.gate.clear()
    job = JobMsg(task_name='extract_features', tasks=[
        ExtractFeaturesMsg.deserialize(_extract(
            fs(dirs['inputs'] / 'image.png'), fs(first))),
        ExtractFeaturesMsg.deserialize(_extract(
            DataLocation('url', f'http://127.0.0.3:{port}/gated/image.png'),
            fs(second)))]).serialize()
    result = send(app, 'spacer.process_job', job)
    try:
        # Given a job whose first output is staged while the second task
        # still downloads its image,
        wait_for(lambda: list(dirs['outputs'].glob('.first.fv.*.staged')),
                 TIMEOUT, interval=0.1, what='the first output staged')
        # when that staged output disappears before the commit,
        for staged in dirs['outputs'].glob('.first.fv.*.staged'):
            staged.unlink()
    finally:
        http_server.gate.set()
    # then the job fails with a typed error, under a class CoralNet sorts,
    text = failure_of(result)
    assert error_class(text) == 'FileNotFoundError', text
    assert 'spacer_worker.exceptions.OutputNotPublishedError: ' in text
    assert str(first) in text
    # and no output of it is published.
    assert not first.exists() and not second.exists()


# --- done when: still bit-identical to a fresh worker ------------------------------

def _reference_work(app, dirs: dict, port: int, sha256: str, tag: str,
                    model: Path, queue: str | None = None
                    ) -> tuple[bytes, list]:
    """One real extraction (EfficientNet, weights over URL with their
    hash) and one classification, on ``queue`` (default: the contract's);
    the feature file's bytes and the scores."""
    out = dirs['outputs'] / f'identical-{tag}.fv'
    ExtractFeaturesReturnMsg.deserialize(send(
        app, 'spacer.extract_features',
        _weights_extraction(port, dirs, out.name, sha256),
        queue=queue or 'extract').get(timeout=300))
    feature = sorted((dirs['outputs'] / 'training').glob(
        'val*.featurevector'))[0]
    scores = send(app, 'spacer.classify_features', classify_msg(
        feature, model).serialize(), queue=queue or 'classify'
    ).get(timeout=TIMEOUT)
    return out.read_bytes(), scores['scores']


def test_the_attacked_worker_still_works_bit_identically_to_a_fresh_one(
        app, place, http_server, redis_server, tmp_path_factory, unharmed):
    # Last in this module: the worker has run every attack above.
    base, dirs = place
    port = http_server.server_address[1]
    sha256 = _weights(http_server, tmp_path_factory)
    training = dirs['outputs'] / 'training'
    training.mkdir(exist_ok=True)
    TrainClassifierReturnMsg.deserialize(send(
        app, 'spacer.train_classifier', train_msg(training).serialize(),
        queue='train').get(timeout=300))
    model = training / 'model.pkl'
    attacked = _reference_work(app, dirs, port, sha256, 'attacked', model)
    env = {'SPACER_RESULT_BACKEND': redis_server.url(0),
           **_env(dirs, tmp_path_factory.mktemp('fresh-cache'))}
    fresh = Worker('fresh', redis_server.url(0), base, queues='fresh',
                   env=env).start()
    try:
        again = _reference_work(app, dirs, port, sha256, 'fresh', model,
                                queue='fresh')
    finally:
        fresh.stop()
    assert again[0] == attacked[0]
    assert again[1] == attacked[1]
