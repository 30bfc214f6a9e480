"""The public task contract through a real Redis and real celery workers:
task names, queues, JSON payloads in, PySpacer return messages out,
progress, and bad messages failing clearly without hurting the worker."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Connection, Producer

from spacer_worker.client.jobs import Client
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.exceptions import failures
from spacer_worker.messages import (
    ClassifyReturnMsg,
    ExtractFeaturesReturnMsg,
    JobMsg,
    JobReturnMsg,
    TrainClassifierReturnMsg,
)
from tests.builders import (
    FEATURE_DIM,
    ROWCOLS,
    classify_msg,
    extract_msg,
    train_msg,
)

TIMEOUT = 60


class StateRecorder:
    """Every state the result backend publishes for one task (Redis
    pub/sub), so a short PROGRESS phase is not missed by polling."""

    def __init__(self, redis_db, task_id: str) -> None:
        self.pubsub = redis_db.pubsub()
        self.pubsub.subscribe(f'celery-task-meta-{task_id}')
        self.pubsub.get_message(timeout=1)      # subscription confirmation

    def states(self) -> list[dict]:
        seen = []
        while (m := self.pubsub.get_message(timeout=0.5)) is not None:
            if m['type'] == 'message':
                seen.append(json.loads(m['data']))
        self.pubsub.close()
        return seen


def send(app, name, payload, queue, task_id=None):
    return app.send_task(name, args=[payload], queue=queue,
                         task_id=task_id or str(uuid.uuid4()))


def test_extract_train_classify_through_redis(app, start_worker, data_dir,
                                              redis_db):
    # Given one worker per queue, as deployed
    start_worker('extract', queues='extract')
    start_worker('cpu', queues='train,classify')

    # When a client sends PySpacer payloads by task name
    extract = extract_msg(data_dir, 'img1')
    r_extract = send(app, 'spacer.extract_features', extract.serialize(),
                     'extract')
    train = train_msg(data_dir, epochs=3)
    train_id = str(uuid.uuid4())
    recorder = StateRecorder(redis_db, train_id)
    r_train = send(app, 'spacer.train_classifier', train.serialize(), 'train',
                   train_id)

    # Then the results are the PySpacer return messages
    ExtractFeaturesReturnMsg.deserialize(r_extract.get(timeout=TIMEOUT))
    features = ImageFeatures.load(extract.feature_loc)
    assert features.npoints == len(ROWCOLS)
    assert features.feature_dim == FEATURE_DIM

    trained = TrainClassifierReturnMsg.deserialize(r_train.get(timeout=TIMEOUT))
    assert len(trained.ref_accs) == 3
    # and training published its progress after each epoch
    progress = [s['result'] for s in recorder.states()
                if s['status'] == 'PROGRESS']
    assert [p['epoch'] for p in progress] == [1, 2, 3]
    assert all(p['epochs'] == 3 for p in progress)
    assert [p['ref_acc'] for p in progress] == pytest.approx(trained.ref_accs)

    # When the extracted features are classified with the trained model
    r_classify = send(app, 'spacer.classify_features',
                      classify_msg(extract.feature_loc.key,
                                   train.model_loc.key).serialize(),
                      'classify')
    scores = ClassifyReturnMsg.deserialize(r_classify.get(timeout=TIMEOUT))
    assert [(r, c) for r, c, _ in scores.scores] == ROWCOLS
    assert sorted(scores.classes) == [1, 2, 3]


def test_process_job_reports_images_done(app, start_worker, data_dir,
                                         redis_db):
    start_worker('extract', queues='extract')
    job = JobMsg(task_name='extract_features',
                 tasks=[extract_msg(data_dir, f'im{i}', seed=i)
                        for i in range(3)])
    task_id = str(uuid.uuid4())
    recorder = StateRecorder(redis_db, task_id)
    result = send(app, 'spacer.process_job', job.serialize(), 'extract',
                  task_id).get(timeout=TIMEOUT)
    returned = JobReturnMsg.deserialize(result)
    assert returned.ok and len(returned.results) == 3
    progress = [s['result'] for s in recorder.states()
                if s['status'] == 'PROGRESS']
    assert [(p['done'], p['total'], p['unit']) for p in progress] == [
        (1, 3, 'images'), (2, 3, 'images'), (3, 3, 'images')]


def test_failing_job_answers_ok_false(app, start_worker, data_dir):
    start_worker('extract', queues='extract')
    msg = extract_msg(data_dir, 'gone')
    job = JobMsg(task_name='extract_features', tasks=[msg])
    (data_dir / 'gone.png').unlink()
    returned = JobReturnMsg.deserialize(
        send(app, 'spacer.process_job', job.serialize(), 'extract'
             ).get(timeout=TIMEOUT))
    assert not returned.ok
    assert 'DataNotFoundError' in returned.error_message
    assert 'gone.png' in returned.error_message


def test_a_pyspacer_class_survives_the_prefork_pool(app, start_worker,
                                                    data_dir, redis_db):
    # Given a prefork worker (its pool child pickles the failure back)
    start_worker('extract', queues='extract')
    # When a task fails with one of PySpacer's classes (a stand-in here)
    msg = extract_msg(data_dir, 'outside')
    payload = msg.serialize() | {'rowcols': [[5, 5], [64, 3]]}
    result = send(app, 'spacer.extract_features', payload, 'extract')
    with pytest.raises(Exception) as info:
        result.get(timeout=TIMEOUT)

    # Then the stored FAILURE carries PySpacer's class path, not our base
    assert result.state == 'FAILURE'
    assert type(info.value).__name__ == 'RowColumnInvalidError'
    stored = json.loads(redis_db.get(f'celery-task-meta-{result.id}'))
    assert (stored['result']['exc_module'], stored['result']['exc_type']) \
        == ('spacer.exceptions', 'RowColumnInvalidError')
    # and the traceback ends in PySpacer's line, our class as its cause
    last = result.traceback.strip().splitlines()[-1]
    assert last.startswith('spacer.exceptions.RowColumnInvalidError: '), last
    assert 'Row value 64 falls outside' in last
    assert 'spacer_worker.exceptions.RowColumnInvalidError: ' in \
        result.traceback
    # and the client reports the class CoralNet sorts by, and ours
    status = Client(app).status(result.id)
    assert status.error_class == 'spacer.exceptions.RowColumnInvalidError'
    assert status.error_type == 'RowColumnInvalidError'
    assert failures.is_user_error(status.failure_text())


def _publish_raw(broker_url: str, queue: str, task: str, body: bytes,
                 content_type: str = 'application/json') -> str:
    """A message with Celery's headers but a body we choose."""
    task_id = str(uuid.uuid4())
    with Connection(broker_url) as conn:
        Producer(conn).publish(
            body, exchange='', routing_key=queue,
            content_type=content_type, content_encoding='utf-8',
            headers={'lang': 'py', 'task': task, 'id': task_id,
                     'root_id': task_id, 'parent_id': None, 'group': None,
                     'retries': 0, 'eta': None, 'expires': None,
                     'timelimit': [None, None], 'argsrepr': '',
                     'kwargsrepr': '', 'origin': 'test'})
    return task_id


def test_bad_messages_fail_clearly_and_the_worker_keeps_serving(
        app, start_worker, data_dir, broker_url):
    start_worker('w', queues='extract,classify')
    good = extract_msg(data_dir, 'good')
    missing_image = extract_msg(data_dir, 'missing')
    (data_dir / 'missing.png').unlink()
    wrong_types = good.serialize() | {'rowcols': 'all of them'}
    corrupt = data_dir / 'corrupt.pkl'
    corrupt.write_bytes(b'this is not a pickle')
    features = extract_msg(data_dir, 'feats')
    send(app, 'spacer.extract_features', features.serialize(),
         'extract').get(timeout=TIMEOUT)

    cases = [
        # (task, payload, queue, error type (PySpacer's, then ours in the
        # traceback), words the message must hold)
        ('spacer.extract_features', '{"job_token": ', 'extract',
         ('ValueError', 'MessageError'), ['not valid JSON']),
        ('spacer.extract_features', ['a', 'list'], 'extract',
         ('ValueError', 'MessageError'), ['must be a JSON object', 'list']),
        ('spacer.no_such_task', good.serialize(), 'extract',
         ('NotRegistered', None), ['spacer.no_such_task']),
        ('spacer.extract_features', wrong_types, 'extract',
         ('ValueError', 'MessageError'), ['rowcols', 'all of them']),
        ('spacer.extract_features', missing_image.serialize(), 'extract',
         ('FileNotFoundError', 'DataNotFoundError'), ['missing.png']),
        ('spacer.classify_features',
         classify_msg(features.feature_loc.key, corrupt).serialize(),
         'classify', ('UnpicklingError', 'ClassifierLoadError'),
         ['corrupt.pkl']),
        ('spacer.process_job', {'task_name': 'fly', 'tasks': []}, 'extract',
         ('ValueError', 'MessageError'), ['task_name', 'fly']),
    ]
    results = [(send(app, t, p, q), kind, words)
               for t, p, q, kind, words in cases]
    raw_id = _publish_raw(broker_url, 'extract', 'spacer.extract_features',
                          b'{"args": [{"job_token": ')

    for result, kind, words in results:
        with pytest.raises(Exception) as info:
            result.get(timeout=TIMEOUT)
        wire, ours = kind
        assert type(info.value).__name__ == wire, info.value
        for word in words:
            assert word in str(info.value)
        assert result.state == 'FAILURE'
        if ours is not None:
            assert f'spacer_worker.exceptions.{ours}: ' in result.traceback
    raw = app.AsyncResult(raw_id)
    with pytest.raises(Exception) as info:
        raw.get(timeout=TIMEOUT)
    assert raw.state == 'FAILURE'
    assert 'could not be decoded' in str(info.value)

    # The worker still serves good work afterwards.
    ExtractFeaturesReturnMsg.deserialize(
        send(app, 'spacer.extract_features', good.serialize(),
             'extract').get(timeout=TIMEOUT))


@pytest.mark.reference
def test_bare_celery_client_with_pyspacer_messages(
        pyspacer_reference, broker_url, start_worker, data_dir):
    """A client with only celery, messages made and read by PySpacer."""
    from celery import Celery

    from tests.reference import run_reference

    extract = extract_msg(data_dir, 'ref')
    train = train_msg(data_dir, epochs=2)
    # PySpacer builds the messages (from our JSON, so paths match).
    payloads = run_reference("""
from spacer.messages import ExtractFeaturesMsg, TrainClassifierMsg, JobMsg
ex = ExtractFeaturesMsg.deserialize(PAYLOAD['extract'])
tr = TrainClassifierMsg.deserialize(PAYLOAD['train'])
RESULT = {'extract': ex.serialize(), 'train': tr.serialize(),
          'job': JobMsg(task_name='extract_features', tasks=[ex]).serialize()}
""", {'extract': extract.serialize(), 'train': train.serialize()})

    start_worker('all')
    bare = Celery('bare', broker=broker_url, backend=broker_url,
                  set_as_current=False)
    bare.conf.update(task_serializer='json', result_serializer='json',
                     accept_content=['json'])
    try:
        results = {
            'extract': bare.send_task('spacer.extract_features',
                                      args=[payloads['extract']],
                                      queue='extract'),
            'train': bare.send_task('spacer.train_classifier',
                                    args=[payloads['train']], queue='train'),
        }
        answers = {k: r.get(timeout=TIMEOUT) for k, r in results.items()}
        answers['job'] = bare.send_task(
            'spacer.process_job', args=[payloads['job']],
            queue='extract').get(timeout=TIMEOUT)
        answers['classify'] = bare.send_task(
            'spacer.classify_features', args=[classify_msg(
                extract.feature_loc.key, train.model_loc.key).serialize()],
            queue='classify').get(timeout=TIMEOUT)
    finally:
        bare.close()

    read = run_reference("""
from spacer.messages import (ExtractFeaturesReturnMsg, TrainClassifierReturnMsg,
                             JobReturnMsg, ClassifyReturnMsg)
from spacer.data_classes import ImageFeatures
from spacer.messages import DataLocation
e = ExtractFeaturesReturnMsg.deserialize(PAYLOAD['extract'])
t = TrainClassifierReturnMsg.deserialize(PAYLOAD['train'])
j = JobReturnMsg.deserialize(PAYLOAD['job'])
c = ClassifyReturnMsg.deserialize(PAYLOAD['classify'])
f = ImageFeatures.load(DataLocation('filesystem', PAYLOAD['features']))
RESULT = {'runtime': e.runtime, 'ref_accs': len(t.ref_accs), 'ok': j.ok,
          'n_scores': len(c.scores), 'classes': sorted(c.classes),
          'npoints': len(f.point_features)}
""", {**answers, 'features': extract.feature_loc.key})
    assert read['ok'] is True
    assert read['ref_accs'] == 2
    assert read['n_scores'] == len(ROWCOLS)
    assert read['classes'] == [1, 2, 3]
    assert read['npoints'] == len(ROWCOLS)


def test_expedited_task_runs_before_queued_ones(app, start_worker, data_dir):
    # Given a backlog queued while no worker runs
    normal = [send(app, 'spacer.extract_features',
                   extract_msg(data_dir, f'n{i}', seed=i).serialize(),
                   'extract') for i in range(4)]
    urgent = app.send_task('spacer.extract_features',
                           args=[extract_msg(data_dir, 'urgent').serialize()],
                           queue='extract', priority=0)
    # When a worker starts, the expedited task is served first
    start_worker('w', queues='extract')
    for r in [*normal, urgent]:
        r.get(timeout=TIMEOUT)
    done = {r.id: r.date_done for r in [*normal, urgent]}
    assert done[urgent.id] < min(done[r.id] for r in normal)
