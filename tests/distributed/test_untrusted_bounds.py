"""Issue 28's worker-side attacks on time and control, through real workers.

A hostile party can write anything to the broker: a message forging its
own ``delivery_info`` to claim a queue with a longer ceiling, a message
carrying no limits at all, Celery remote control commands, a URL whose host
drips its status line. Each runs against a real celery worker on a real
Redis; the worker must keep the operator's bounds and go on serving.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import uuid

import numpy as np
import pytest

from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    ExtractFeaturesMsg,
    JobMsg,
    JobReturnMsg,
)
from tests.builders import ROWCOLS, classify_msg, fs, make_image
from tests.file_server import serve
from tests.services import runs, wait_for

TIMEOUT = 90


# --- forged messages ------------------------------------------------------------

def _forge(app, redis_db, name: str, payload, into: str, claims: str,
           time_limit: float | None = None) -> str:
    """Put a task message into list ``into`` whose own delivery_info
    claims queue ``claims``, as a broker user can: the sender writes that
    field, Redis never checks it. Returns the task id."""
    staging = f'staging-{uuid.uuid4().hex[:8]}'
    task_id = str(uuid.uuid4())
    options = {'time_limit': time_limit,
               'soft_time_limit': time_limit} if time_limit else {}
    app.send_task(name, args=[payload], queue=staging, priority=0,
                  task_id=task_id, **options)
    raw = json.loads(wait_for(lambda: redis_db.rpop(staging), 10,
                              what='the staged message'))
    if not time_limit:
        raw['headers']['timelimit'] = [None, None]
    raw['properties']['delivery_info'] = {'exchange': claims,
                                          'routing_key': claims}
    redis_db.lpush(into, json.dumps(raw))
    return task_id


def _outcome(app, task_id: str, timeout: float = TIMEOUT) -> tuple[str, str]:
    result = app.AsyncResult(task_id)
    wait_for(lambda: result.state in ('SUCCESS', 'FAILURE'), timeout,
             what=f'task {task_id} done')
    return result.state, str(result.traceback or result.result)


def _classify(folder) -> dict:
    """A valid classify message whose files do not exist: it fails, but
    only once it runs."""
    return classify_msg(folder / 'none.featurevector',
                        folder / 'none.pkl').serialize()


def test_a_message_claiming_another_queue_keeps_the_ceiling_of_its_own(
        app, redis_db, start_worker, tmp_path):
    # Given a classify worker with a 4 s ceiling (train_high allows days)
    # and tasks held 20 s
    worker = start_worker('ceiling', queues='classify', env={
        'SPACER_CLASSIFY_TIME_LIMIT': '4', 'DIST_TEST_TASK_DELAY': '20'})
    # When a message in the classify list claims train_high and asks a day
    start = time.monotonic()
    task_id = _forge(app, redis_db, 'spacer.classify_features',
                     _classify(tmp_path), into='classify',
                     claims='train_high', time_limit=86400)
    _outcome(app, task_id)
    # Then the classify ceiling cuts its 20 s hold short
    assert time.monotonic() - start < 15
    assert 'Soft time limit (3s) exceeded' in worker.log_text()


def test_a_message_without_limits_gets_the_limit_of_the_queue_it_came_from(
        app, redis_db, start_worker, tmp_path):
    # process_job's own default is the train limit (hours): a job message
    # with no limits on the classify queue must still get classify's.
    worker = start_worker('nolimit', queues='classify', env={
        'SPACER_CLASSIFY_TIME_LIMIT': '4', 'DIST_TEST_TASK_DELAY': '20'})
    start = time.monotonic()
    job = JobMsg(task_name='classify_features',
                 tasks=[ClassifyFeaturesMsg.deserialize(_classify(tmp_path))])
    task_id = _forge(app, redis_db, 'spacer.process_job', job.serialize(),
                     into='classify', claims='classify')
    _outcome(app, task_id)
    assert time.monotonic() - start < 15
    assert 'Soft time limit (3s) exceeded' in worker.log_text()


@pytest.fixture
def busy_host():
    """An HTTP server on 127.0.0.1 answering 503 to everything: a
    transient failure, which the worker retries."""
    class Busy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header('Content-Length', '0')
            self.end_headers()

    with serve(Busy, '127.0.0.1') as server:
        yield f'http://127.0.0.1:{server.server_address[1]}'


def test_a_retry_goes_back_to_the_queue_it_came_from_not_the_claimed_one(
        app, redis_db, start_worker, tmp_path, busy_host):
    from spacer_worker.extractors import DummyExtractor

    # Celery sends a retry where the request's delivery_info says (and
    # copies its keys into the retry's options): a forged claim would move
    # the message to a queue of the sender's choice.
    start_worker('retry', queues='extract', env={
        'SPACER_TASK_MAX_RETRIES': '1', 'SPACER_RETRY_BACKOFF_MAX': '1'})
    msg = ExtractFeaturesMsg(
        job_token='busy', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=_url(f'{busy_host}/image.png'),
        feature_loc=fs(tmp_path / 'out.featurevector'))
    task_id = _forge(app, redis_db, 'spacer.extract_features',
                     msg.serialize(), into='extract', claims='train_high',
                     time_limit=60)
    state, text = _outcome(app, task_id)
    assert state == 'FAILURE', text
    assert len([r for r in runs(redis_db) if r['id'] == task_id]) == 2
    assert not redis_db.keys('train_high*')


# --- remote control -------------------------------------------------------------

def _node(app) -> str:
    replies = wait_for(lambda: app.control.ping(timeout=2), 30,
                       what='a worker answering ping')
    return next(iter(replies[0]))


@pytest.mark.parametrize('command, arguments', [
    ('shutdown', {}),
    ('pool_restart', {'reload': False}),
    ('time_limit', {'task_name': 'spacer.classify_features',
                    'soft': 86400, 'hard': 86400}),
    ('add_consumer', {'queue': 'train_high'}),
    ('rate_limit', {'task_name': 'spacer.classify_features',
                    'rate_limit': '1/h'}),
])
def test_remote_control_refuses_what_is_not_allowed_and_keeps_serving(
        app, redis_db, start_worker, tmp_path, command, arguments):
    worker = start_worker('remote', queues='classify', env={
        'SPACER_CLASSIFY_TIME_LIMIT': '30'})
    node = _node(app)
    pids = set(worker.pids())
    # When a broker user sends the command to every worker
    replies = app.control.broadcast(command, arguments=arguments,
                                    reply=True, timeout=5)
    # Then the worker answers with a refusal and changes nothing
    assert replies and 'refused' in replies[0][node]['error'], replies
    time.sleep(1)
    assert worker.proc.poll() is None
    assert set(worker.pids()) == pids       # no pool restart either
    queues = app.control.inspect(destination=[node],
                                 timeout=5).active_queues()[node]
    assert [q['name'] for q in queues] == ['classify']
    # and it still serves: a task runs under the unchanged 30 s ceiling
    state, _ = _outcome(app, app.send_task(
        'spacer.classify_features', args=[_classify(tmp_path)],
        queue='classify').id)
    assert state == 'FAILURE'
    assert [r['pid'] for r in runs(redis_db)][-1] in pids


def test_allowed_remote_control_commands_still_answer(app, start_worker):
    start_worker('inspect', queues='classify')
    node = _node(app)
    inspect = app.control.inspect(destination=[node], timeout=5)
    for method in ('stats', 'active_queues', 'registered', 'scheduled',
                   'active', 'reserved', 'revoked', 'conf'):     # Flower's
        reply = getattr(inspect, method)()
        assert reply and node in reply, method
        assert not (isinstance(reply[node], dict)
                    and 'error' in reply[node]), (method, reply)
    app.control.revoke(str(uuid.uuid4()))
    assert app.control.ping(destination=[node], timeout=5)


def test_an_operator_may_open_a_command_again(app, start_worker):
    start_worker('opened', queues='classify', env={
        'SPACER_WORKER_CONTROL_COMMANDS': 'ping,add_consumer,active_queues'})
    node = _node(app)
    reply = app.control.add_consumer('train_high', reply=True, timeout=5,
                                     destination=[node])
    assert 'ok' in reply[0][node], reply
    # and a command left out is refused
    assert 'error' in app.control.inspect(
        destination=[node], timeout=5).stats()[node]


# --- download deadline ------------------------------------------------------------

@pytest.fixture
def dripping_host():
    """A host on 127.0.0.5 that sends its status line a byte a second."""
    server = socket.socket()
    server.bind(('127.0.0.5', 0))
    server.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            try:
                conn.recv(65536)
                for byte in b'HTTP/1.1 200 OK\r\nX-Filler: ' + b'a' * 200:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(1)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f'http://127.0.0.5:{server.getsockname()[1]}'
    stop.set()
    server.close()


def test_a_host_dripping_its_headers_ends_at_the_download_deadline(
        app, start_worker, tmp_path, dripping_host):
    from spacer_worker.extractors import DummyExtractor

    worker = start_worker('drip', queues='extract', env={
        'SPACER_URL_ALLOWED_HOSTS': '127.0.0.5/32',
        'SPACER_URL_TIMEOUT': '5', 'SPACER_URL_DOWNLOAD_TIMEOUT': '3',
        'SPACER_EXTRACT_TIME_LIMIT': '120', 'SPACER_TASK_MAX_RETRIES': '0',
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path)})
    msg = ExtractFeaturesMsg(
        job_token='drip', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=_url(f'{dripping_host}/image.png'),
        feature_loc=fs(tmp_path / 'out.featurevector'))
    start = time.monotonic()
    result = app.send_task('spacer.extract_features',
                           args=[msg.serialize()], queue='extract')
    with pytest.raises(Exception) as info:
        result.get(timeout=TIMEOUT)
    # Then it fails at the 3 s deadline, not at the 108 s soft limit (a
    # broker message reads every URL failure alike; the log says which)
    assert time.monotonic() - start < 40
    assert 'URLDownloadError' in result.traceback
    assert 'URL_DOWNLOAD_TIMEOUT' in worker.log_text()
    del info
    assert not (tmp_path / 'out.featurevector').exists()
    # and the worker still extracts
    make_image(tmp_path / 'image.png', seed=1)
    good = ExtractFeaturesMsg(
        job_token='good', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=fs(tmp_path / 'image.png'),
        feature_loc=fs(tmp_path / 'good.featurevector'))
    app.send_task('spacer.extract_features', args=[good.serialize()],
                  queue='extract').get(timeout=TIMEOUT)
    assert (tmp_path / 'good.featurevector').is_file()


def _url(url: str):
    from spacer_worker.data_classes import DataLocation
    return DataLocation('url', url)


# --- allocation bounds through a real worker ----------------------------------------

BOUNDS = {
    'SPACER_IMAGE_MAX_DECODED_BYTES': str(64 << 20),
    'SPACER_WEIGHTS_MAX_TENSOR_BYTES': str(32 << 20),
    'SPACER_FEATURE_JSON_MAX_BYTES': str(1 << 20),
    'SPACER_FEATURE_MAX_POINTS': '100',
    'SPACER_RESULT_MAX_BYTES': '4000',
    'SPACER_EXTRACT_BACKEND': 'onnxruntime',
}


@pytest.fixture
def bounded(app, start_worker, tmp_path, redis_db):
    """A worker under the bounds above, reading and writing ``tmp_path``;
    yields it, then checks the same pool process still extracts."""
    worker = start_worker('bounded', queues='extract,train,classify',
                          env={**BOUNDS,
                               'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
                               'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path)})
    yield worker
    _warm_up(app, tmp_path)
    assert (tmp_path / 'warm.featurevector').is_file()
    pids = {r['pid'] for r in runs(redis_db)}
    assert len(pids) == 1, pids


def _failure(app, name: str, payload: dict, queue: str) -> str:
    result = app.send_task(name, args=[payload], queue=queue)
    result.get(timeout=TIMEOUT, propagate=False)
    assert result.state == 'FAILURE'
    return result.traceback


def _peak_mb(redis_db) -> float:
    """Peak RSS (VmHWM) of the worker's pool process, in MB."""
    pid = runs(redis_db)[-1]['pid']
    for line in open(f'/proc/{pid}/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    raise AssertionError('no VmHWM')


def _warm_up(app, tmp_path) -> None:
    from spacer_worker.extractors import DummyExtractor
    make_image(tmp_path / 'image.png', seed=1)
    app.send_task('spacer.extract_features', args=[ExtractFeaturesMsg(
        job_token='warm', extractor=DummyExtractor(feature_dim=8),
        rowcols=ROWCOLS, image_loc=fs(tmp_path / 'image.png'),
        feature_loc=fs(tmp_path / 'warm.featurevector')).serialize()],
        queue='extract').get(timeout=TIMEOUT)


def test_a_tiff_declaring_a_huge_tile_is_refused_before_decoding(
        app, bounded, tmp_path, redis_db):
    from spacer_worker.extractors import DummyExtractor
    from tests.storage.hostile_files import tiff_tile_bomb

    _warm_up(app, tmp_path)
    before = _peak_mb(redis_db)
    (tmp_path / 'bomb.tif').write_bytes(tiff_tile_bomb())
    text = _failure(app, 'spacer.extract_features', ExtractFeaturesMsg(
        job_token='bomb', extractor=DummyExtractor(feature_dim=8),
        rowcols=[(10, 10)], image_loc=fs(tmp_path / 'bomb.tif'),
        feature_loc=fs(tmp_path / 'bomb.featurevector')).serialize(),
        'extract')
    assert 'IMAGE_MAX_DECODED_BYTES' in text, text
    assert _peak_mb(redis_db) - before < 40


def test_weights_of_zero_stride_tensors_are_refused_before_building(
        app, bounded, tmp_path, redis_db):
    from spacer_worker.extractors import EfficientNetExtractor
    from tests.storage.hostile_files import pt_zero_stride_tensors

    def extract(weights: bytes, name: str) -> str:
        (tmp_path / name).write_bytes(weights)
        return _failure(app, 'spacer.extract_features', ExtractFeaturesMsg(
            job_token='w', rowcols=[(10, 10)],
            extractor=EfficientNetExtractor(
                data_locations={'weights': fs(tmp_path / name)}),
            image_loc=fs(tmp_path / 'image.png'),
            feature_loc=fs(tmp_path / 'w.featurevector')).serialize(),
            'extract')

    _warm_up(app, tmp_path)
    # Weights that load but are no EfficientNet: the same code path runs,
    # its imports are made.
    extract(pt_zero_stride_tensors(tensors=1, elements=4), 'small.pt')
    before = _peak_mb(redis_db)
    text = extract(pt_zero_stride_tensors(), 'bomb.pt')
    assert 'WeightsLoadError' in text, text
    assert _peak_mb(redis_db) - before < 40


def test_a_pickled_array_of_zero_size_elements_is_refused(
        app, bounded, tmp_path):
    from tests.storage.hostile_files import zero_size_pickle

    (tmp_path / 'model.pkl').write_bytes(zero_size_pickle())
    _features(tmp_path / 'img.featurevector', points=5)
    text = _failure(app, 'spacer.classify_features', classify_msg(
        tmp_path / 'img.featurevector', tmp_path / 'model.pkl').serialize(),
        'classify')
    assert 'PICKLE_ARRAY_MAX_BYTES' in text, text


def _features(path, points: int, dim: int = 32) -> None:
    from spacer_worker.data_classes import ImageFeatures
    rng = np.random.default_rng(points)
    ImageFeatures.from_arrays(
        list(range(points)), list(range(points)),
        rng.random((points, dim)).astype(np.float32)).store(fs(path))


def _model(path) -> None:
    from spacer_worker.storage.classifiers import dump_classifier
    from tests.storage.test_classifiers import train
    path.write_bytes(dump_classifier(train('sgd')))


def test_json_features_over_their_bound_are_not_parsed(app, bounded,
                                                       tmp_path):
    from tests.storage.hostile_files import json_feature_bomb

    (tmp_path / 'img.featurevector').write_bytes(json_feature_bomb())
    _model(tmp_path / 'model.pkl')
    text = _failure(app, 'spacer.classify_features', classify_msg(
        tmp_path / 'img.featurevector', tmp_path / 'model.pkl').serialize(),
        'classify')
    assert 'FEATURE_JSON_MAX_BYTES' in text, text


def test_feature_files_over_the_point_bound_fail_classification_and_training(
        app, bounded, tmp_path):
    from tests.builders import train_msg

    _features(tmp_path / 'many.featurevector', points=101)
    _model(tmp_path / 'model.pkl')
    text = _failure(app, 'spacer.classify_features', classify_msg(
        tmp_path / 'many.featurevector', tmp_path / 'model.pkl').serialize(),
        'classify')
    assert 'FEATURE_MAX_POINTS' in text, text
    # a training one of whose files holds as many
    folder = tmp_path / 'training'
    folder.mkdir()
    msg = train_msg(folder, epochs=1)
    _features(folder / 'train0.featurevector', points=101)
    text = _failure(app, 'spacer.train_classifier', msg.serialize(), 'train')
    assert 'FEATURE_MAX_POINTS' in text, text


def test_a_result_over_its_bound_fails_instead_of_being_written(
        app, bounded, tmp_path, redis_db):
    _features(tmp_path / 'img.featurevector', points=80)
    _model(tmp_path / 'model.pkl')
    msg = classify_msg(tmp_path / 'img.featurevector', tmp_path / 'model.pkl')
    text = _failure(app, 'spacer.classify_features', msg.serialize(),
                    'classify')
    assert 'RESULT_MAX_BYTES' in text, text
    # a job answers as PySpacer does: ok=False, its error's text
    job = JobMsg(task_name='classify_features', tasks=[msg])
    answer = JobReturnMsg.deserialize(app.send_task(
        'spacer.process_job', args=[job.serialize()],
        queue='classify').get(timeout=TIMEOUT))
    assert not answer.ok and 'RESULT_MAX_BYTES' in answer.error_message
