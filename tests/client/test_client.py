"""spacer_worker.client.jobs against a real Redis and a real celery worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from spacer_worker.client.jobs import Client, JobHandle, JobState
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.exceptions import DataNotFoundError, JobFailedError, MessageError
from spacer_worker.messages import JobMsg
from tests.client.helpers import extract_msg, write_image
from tests.services import REPO, worker_env


def test_handle_survives_a_round_trip_through_text():
    handle = JobHandle(id='0f6c', task='spacer.process_job', queue='train')
    assert JobHandle.parse(str(handle)) == handle
    assert JobHandle.parse('0f6c').id == '0f6c'
    with pytest.raises(MessageError, match='non-empty'):
        JobHandle.parse('')


def test_submit_rejects_bad_priority_and_foreign_objects(app):
    client = Client(app)
    with pytest.raises(MessageError, match='priority must be an integer 0-9'):
        client.send('spacer.classify_features', {}, priority=12)
    with pytest.raises(MessageError, match='Cannot submit a dict'):
        client.submit({'job_token': 'x'})


def test_extraction_result_comes_back_typed(app, celery_worker, tmp_path):
    from spacer_worker.messages import ExtractFeaturesReturnMsg

    image = write_image(tmp_path / 'a.png')
    msg = extract_msg(image, tmp_path / 'a.featurevector')
    client = Client(app)

    handle = client.submit(msg)

    assert handle.queue == 'extract'
    assert handle.task == 'spacer.extract_features'
    result = client.result(handle, timeout=60)
    assert isinstance(result, ExtractFeaturesReturnMsg)
    assert client.status(handle).state is JobState.SUCCESS
    features = ImageFeatures.load(msg.feature_loc)
    assert features.feature_dim == 8 and features.npoints == 2


def test_worker_error_is_raised_with_its_own_type(app, celery_worker, tmp_path):
    msg = extract_msg(tmp_path / 'missing.png', tmp_path / 'x.featurevector')
    client = Client(app)

    handle = client.submit(msg, priority=0)

    with pytest.raises(DataNotFoundError, match='missing.png'):
        client.result(handle, timeout=60)
    status = client.status(handle)
    assert status.state is JobState.FAILURE
    assert status.error_type == 'DataNotFoundError'


def _slow_job(tmp_path, count=8):
    # A large image, many times: decoding it takes long enough per task to
    # watch the job's progress.
    image = tmp_path / 'big.png'
    if not image.exists():
        write_image(image, size=(2400, 1800))
    return JobMsg(task_name='extract_features', tasks=[
        extract_msg(image, tmp_path / f'slow{i}.featurevector', token=str(i))
        for i in range(count)])


def test_job_progress_is_readable_while_it_runs(app, celery_worker, tmp_path):
    from spacer_worker.messages import JobReturnMsg

    client = Client(app)
    job = _slow_job(tmp_path)
    seen = []

    handle = client.submit(job)
    result = client.result(handle, timeout=120, interval=0.02,
                           on_status=seen.append)

    assert isinstance(result, JobReturnMsg) and result.ok
    assert len(result.results) == len(job.tasks)
    progress = [s.progress for s in seen if s.state is JobState.PROGRESS]
    assert progress, f'no PROGRESS among {[s.state for s in seen]}'
    assert all(p['total'] == len(job.tasks) and p['unit'] == 'images'
               for p in progress)
    assert any(0 < p['done'] < len(job.tasks) for p in progress)


def test_cancel_stops_a_running_job(app, celery_worker, tmp_path):
    client = Client(app)
    handle = client.submit(_slow_job(tmp_path, count=30))
    deadline = time.monotonic() + 60
    while client.status(handle).state not in (JobState.STARTED,
                                              JobState.PROGRESS):
        assert time.monotonic() < deadline, 'job never started'
        time.sleep(0.05)

    client.cancel(handle, terminate=True)

    with pytest.raises(JobFailedError):
        client.result(handle, timeout=60)
    assert client.status(handle).state is JobState.REVOKED


def test_client_runs_without_heavy_libraries(redis_url, celery_worker,
                                             tmp_path):
    """A web server with only the client extra: torch, scikit-learn, numpy,
    Pillow and boto3 cannot be imported, yet it submits and reads results."""
    image = write_image(tmp_path / 'c.png')
    script = textwrap.dedent(f'''
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'sklearn', 'numpy', 'PIL',
                                          'boto3', 'scipy'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        from spacer_worker.client.jobs import Client
        from spacer_worker.data_classes import DataLocation
        from spacer_worker.extractors import DummyExtractor
        from spacer_worker.messages import ExtractFeaturesMsg
        msg = ExtractFeaturesMsg(
            job_token='light', extractor=DummyExtractor(feature_dim=4),
            rowcols=[(1, 1)],
            image_loc=DataLocation('filesystem', {str(image)!r}),
            feature_loc=DataLocation('filesystem',
                                     {str(tmp_path / 'c.featurevector')!r}))
        client = Client()
        result = client.result(client.submit(msg), timeout=60)
        print(type(result).__name__, result.runtime >= 0)
    ''')
    done = subprocess.run([sys.executable, '-c', script], cwd=str(REPO),
                          env=worker_env(redis_url), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'ExtractFeaturesReturnMsg True'


def test_expedited_job_goes_to_the_first_served_priority_list(app, redis_url,
                                                              tmp_path):
    # Nobody consumes this queue: look at where Redis holds the messages.
    import redis
    client = Client(app)
    msg = extract_msg(tmp_path / 'a.png', tmp_path / 'a.featurevector')
    # Two jobs: a second token (the same one would be the same job).
    msg2 = extract_msg(tmp_path / 'a.png', tmp_path / 'a.featurevector',
                       token='tok-urgent')

    normal = client.submit(msg, queue='parked-prio')
    urgent = client.submit(msg2, queue='parked-prio', priority=0)

    r = redis.Redis.from_url(redis_url)
    first_served = [m.decode() for m in r.lrange('parked-prio', 0, -1)]
    later = [m.decode() for m in r.lrange('parked-prio\x06\x165', 0, -1)]
    assert len(first_served) == 1 and urgent.id in first_served[0]
    assert len(later) == 1 and normal.id in later[0]
    r.delete('parked-prio', 'parked-prio\x06\x165')
