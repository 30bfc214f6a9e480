"""Large payloads through real Redis and real workers: stored once, sent by
location, fetched only from the allowed place, not repeated in results,
deleted when done."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest

from spacer_worker.celery import payloads
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import Client, JobState
from spacer_worker.messages import JobMsg, JobReturnMsg, TrainClassifierReturnMsg
from tests.builders import train_msg
from tests.services import wait_for

THRESHOLD = '2000'   # bytes: the test trainings are ~10 KB of JSON


@pytest.fixture
def payload_dir(tmp_path, monkeypatch):
    d = tmp_path / 'payloads'
    d.mkdir()
    monkeypatch.setenv('SPACER_PAYLOAD_LOCATION', str(d))
    monkeypatch.setenv('SPACER_PAYLOAD_OFFLOAD_BYTES', THRESHOLD)
    return d


def _worker_env(payload_dir) -> dict:
    return {'SPACER_PAYLOAD_LOCATION': str(payload_dir)}


def _queued_bodies(redis_db, queue='train') -> list[bytes]:
    """Decoded task bodies waiting in ``queue`` (every priority list)."""
    return [base64.b64decode(json.loads(raw)['body'])
            for key in redis_db.keys(f'{queue}*')
            if redis_db.type(key) == b'list'
            for raw in redis_db.lrange(key, 0, -1)]


def test_large_training_goes_by_location_and_is_deleted_after(
        app, start_worker, data_dir, payload_dir, redis_db):
    msg = train_msg(data_dir, epochs=2)
    inline = len(payloads.encode(msg.serialize()))
    assert inline > int(THRESHOLD)

    # Given a training over the threshold, submitted while no worker runs
    handle = Client(app).submit(msg)

    # Then Redis holds only its location; the labels are in one file
    stored = list(payload_dir.iterdir())
    assert [p.name for p in stored] == [f'{handle.id}.json']
    assert json.loads(stored[0].read_bytes()) == json.loads(
        json.dumps(msg.serialize()))
    bodies = _queued_bodies(redis_db)
    assert len(bodies) == 1 and b'spacer_payload' in bodies[0]
    assert b'train0.featurevector' not in bodies[0]
    assert len(bodies[0]) < inline

    # When a worker runs it
    start_worker('w', queues='train', env=_worker_env(payload_dir))
    result = Client(app).result(handle, timeout=120)

    # Then it trained from the stored labels, and the copy is gone
    assert isinstance(result, TrainClassifierReturnMsg)
    assert len(result.ref_accs) == 2
    assert (data_dir / 'model.pkl').exists()
    wait_for(lambda: not list(payload_dir.iterdir()), 10,
             what='payload deleted')


def test_payload_in_s3_through_a_real_worker(app, start_worker, data_dir,
                                             s3_bucket, moto_endpoint,
                                             monkeypatch):
    from spacer_worker.storage import s3 as s3_module
    monkeypatch.setenv('SPACER_PAYLOAD_LOCATION', f's3://{s3_bucket}/jobs')
    monkeypatch.setenv('SPACER_PAYLOAD_OFFLOAD_BYTES', THRESHOLD)
    s3 = s3_module.s3_client()

    def keys():
        listing = s3.list_objects_v2(Bucket=s3_bucket).get('Contents', [])
        return [item['Key'] for item in listing]

    handle = Client(app).submit(train_msg(data_dir, epochs=2))
    assert keys() == [f'jobs/{handle.id}.json']
    start_worker('w', queues='train', env={
        'SPACER_PAYLOAD_LOCATION': f's3://{s3_bucket}/jobs',
        'SPACER_S3_ENDPOINT_URL': moto_endpoint,
        'SPACER_AWS_ACCESS_KEY_ID': 'testing',
        'SPACER_AWS_SECRET_ACCESS_KEY': 'testing',
        'SPACER_AWS_REGION': 'us-east-1'})
    assert len(Client(app).result(handle, timeout=120).ref_accs) == 2
    wait_for(lambda: keys() == [], 10, what='payload deleted from S3')


def test_payload_location_setting():
    root = payloads.PayloadRoot.parse('s3://bucket/a/b/')
    assert (root.storage_type, root.bucket_name, root.prefix) == \
        ('s3', 'bucket', 'a/b')
    assert root.holds(root.location('x.json'))
    from spacer_worker.data_classes import DataLocation
    for key in ('a/b/c/x.json', 'a/x.json', 'a/b/../b/x.json', 'a/b/x.pkl',
                'a/b/.x.json'):
        assert not root.holds(DataLocation('s3', key, 'bucket')), key
    assert not root.holds(DataLocation('s3', 'a/b/x.json', 'other'))
    assert payloads.PayloadRoot.parse('file:///srv/p/').prefix == '/srv/p'
    from spacer_worker.exceptions import ConfigError
    for bad in ('relative/dir', 's3:///nobucket'):
        with pytest.raises(ConfigError, match='PAYLOAD_LOCATION'):
            payloads.PayloadRoot.parse(bad)


def test_small_payload_stays_inline(app, data_dir, payload_dir,
                                    monkeypatch, redis_db):
    # (every other test's payloads run inline: this checks the threshold)
    monkeypatch.setenv('SPACER_PAYLOAD_OFFLOAD_BYTES', str(10 ** 7))
    Client(app).submit(train_msg(data_dir, epochs=1))
    assert not list(payload_dir.iterdir())
    assert b'train0.featurevector' in _queued_bodies(redis_db)[0]


def test_coralnet_queue_result_is_compact_in_redis_full_when_collected(
        app, start_worker, data_dir, payload_dir, redis_db):
    queue = CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:')
    job = JobMsg(task_name='train_classifier', tasks=[train_msg(data_dir, 2)])
    handle = queue.submit_job(job, job_id=7)
    # The books hold the location, not a second copy of the job
    books = redis_db.hget(queue._key('msgs'), handle.id)
    assert b'spacer_payload' in books and b'train0' not in books

    start_worker('w', queues='train', env=_worker_env(payload_dir))
    wait_for(lambda: Client(app).status(handle).state is JobState.SUCCESS,
             120, what='job done')

    # The result in Redis does not repeat the labels...
    raw = redis_db.get(app.backend.get_key_for_task(handle.id))
    assert b'train0.featurevector' not in raw
    stored_result = json.loads(raw)['result']
    compact = JobReturnMsg.deserialize(stored_result)
    assert compact.original_job.tasks[0].labels.label_count == 0
    assert compact.original_job.tasks[0].job_token == 'train'
    # ...while the payload stays until the caller has the result
    assert list(payload_dir.iterdir())

    # When CoralNet collects it, original_job is the job it submitted
    jobs = queue.get_collectable_jobs()
    results, words = queue.collect_jobs(jobs)
    assert words == ['SUCCEEDED']
    assert results[0].ok, results[0].error_message
    assert results[0].original_job == job
    assert len(results[0].results[0].ref_accs) == 2
    # The stored copy goes with the result, once the caller confirms it
    # has it (ack_jobs, or its next collect call)
    assert list(payload_dir.iterdir())
    queue.ack_jobs(jobs)
    assert not list(payload_dir.iterdir())


def test_failed_offloaded_job_reports_its_full_job(
        app, start_worker, data_dir, payload_dir):
    queue = CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:')
    task = train_msg(data_dir, 2)
    task.previous_model_locs = [task.model_loc.__class__(
        'filesystem', str(data_dir / 'no-such-model.pkl'))]
    job = JobMsg(task_name='train_classifier', tasks=[task])
    queue.submit_job(job, job_id=8)
    start_worker('w', queues='train', env=_worker_env(payload_dir))

    jobs = queue.get_collectable_jobs()

    def collected():
        results, _ = queue.collect_jobs(jobs)
        return results
    results = wait_for(collected, 120, interval=0.3, what='job collected')
    assert not results[0].ok
    assert 'no-such-model.pkl' in results[0].error_message
    assert results[0].original_job == job
    queue.ack_jobs(jobs)
    assert not list(payload_dir.iterdir())


# --- a reference is untrusted input ------------------------------------------

def _forged(loc: dict, data: bytes, **changes) -> dict:
    info = {'version': 1, 'location': loc, 'bytes': len(data),
            'sha256': hashlib.sha256(data).hexdigest(), 'owner': 'worker'}
    info.update(changes)
    return {payloads.REF_KEY: info}


def _failure(app, payload) -> str:
    client = Client(app)
    handle = client.send('spacer.train_classifier', payload)
    with pytest.raises(payloads.PayloadError) as info:
        client.result(handle, timeout=60)
    return str(info.value)


def test_worker_reads_no_payload_outside_its_location(
        app, start_worker, data_dir, payload_dir, tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    body = payloads.encode(train_msg(data_dir, 1).serialize())
    (elsewhere / 'x.json').write_bytes(body)
    (payload_dir / 'ok.json').write_bytes(body)
    start_worker('w', queues='train', env=_worker_env(payload_dir))

    outside = _forged({'storage_type': 'filesystem',
                       'key': str(elsewhere / 'x.json'),
                       'bucket_name': None}, body)
    assert 'outside this worker' in _failure(app, outside)

    climbing = _forged({'storage_type': 'filesystem',
                        'key': f'{payload_dir}/../elsewhere/x.json',
                        'bucket_name': None}, body)
    assert 'outside this worker' in _failure(app, climbing)

    inside = {'storage_type': 'filesystem',
              'key': str(payload_dir / 'ok.json'), 'bucket_name': None}
    tampered = _forged(inside, body, sha256='0' * 64)
    assert 'does not match' in _failure(app, tampered)
    huge = _forged(inside, body, bytes=10 ** 12)
    assert 'PAYLOAD_MAX_BYTES' in _failure(app, huge)
    # A refused reference is never deleted on the sender's behalf
    assert (elsewhere / 'x.json').exists()


def test_worker_without_payload_location_refuses_references(
        app, start_worker, data_dir, payload_dir):
    handle = Client(app).submit(train_msg(data_dir, 1))
    start_worker('w', queues='train')
    with pytest.raises(Exception, match='PAYLOAD_LOCATION'):
        Client(app).result(handle, timeout=60)


@pytest.mark.reference
def test_compact_original_job_reads_in_pyspacer(pyspacer_reference, data_dir):
    from spacer_worker.messages import ExtractFeaturesMsg
    train = JobMsg(task_name='train_classifier', tasks=[train_msg(data_dir)])
    extract = JobMsg(task_name='extract_features',
                     tasks=[ExtractFeaturesMsg.example()])
    answers = [JobReturnMsg(original_job=payloads.compact_job(job), ok=False,
                            results=None, error_message='x').serialize()
               for job in (train, extract)]
    from tests.reference import run_reference
    reread = run_reference('''
from spacer.messages import JobReturnMsg
RESULT = [JobReturnMsg.deserialize(a).serialize() for a in PAYLOAD]
''', json.loads(json.dumps(answers)))
    assert reread == json.loads(json.dumps(answers))
    assert reread[0]['original_job']['tasks'][0]['job_token'] == 'train'
