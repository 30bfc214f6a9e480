"""The Celery app's configuration and the task adapters, without a broker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spacer_worker.exceptions import MessageError
from tests.services import REPO


def test_importing_the_app_reads_no_settings_and_loads_no_heavy_library():
    code = (
        'import sys\n'
        'import spacer_worker.celery as c\n'
        'from spacer_worker import config\n'
        'assert config._secrets.cache_info().currsize == 0, "settings read"\n'
        'heavy = {"torch", "numpy", "sklearn", "PIL", "boto3"} & set(sys.modules)\n'
        'assert not heavy, heavy\n'
        'assert not c.app.configured\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO,
                   env={'SPACER_BROKER_URL': 'redis://nowhere:1/0',
                        'PATH': '/usr/bin:/bin'})


def test_configuration_is_json_only_and_reliable(monkeypatch):
    from spacer_worker.celery import build_config
    monkeypatch.setenv('SPACER_TRAIN_TIME_LIMIT', '7200')
    conf = build_config()
    assert conf['task_serializer'] == conf['result_serializer'] == 'json'
    assert conf['accept_content'] == ['json']
    assert conf['task_acks_late'] and conf['task_reject_on_worker_lost']
    assert conf['worker_prefetch_multiplier'] == 1
    options = conf['broker_transport_options']
    # A live task is never redelivered while it may still be running.
    assert options['visibility_timeout'] > 7200
    assert options['priority_steps'] == list(range(10))
    assert conf['task_annotations']['spacer.train_classifier'][
        'time_limit'] == 7200
    assert conf['task_track_started'] and conf['worker_send_task_events']


def test_queues_are_configurable_and_jobs_route_by_their_tasks(monkeypatch):
    from spacer_worker.celery import queue_for, send_options
    monkeypatch.setenv('SPACER_QUEUE_EXTRACT', 'gpu')
    assert queue_for('spacer.classify_image') == 'gpu'
    assert queue_for('spacer.train_classifier') == 'train'
    assert queue_for('spacer.process_job',
                     {'task_name': 'extract_features', 'tasks': []}) == 'gpu'
    options = send_options('spacer.process_job',
                           {'task_name': 'classify_features'})
    assert options['queue'] == 'classify'
    assert options['time_limit'] == 600
    with pytest.raises(MessageError, match="'fly'"):
        queue_for('spacer.process_job', {'task_name': 'fly'})
    with pytest.raises(MessageError, match='spacer.nope'):
        queue_for('spacer.nope')


def test_each_queue_has_its_own_exchange_and_routing_key():
    # A message routed to one queue must never be bound to another queue's
    # key: workers on the train queue must not see extraction work.
    from spacer_worker.celery import build_config, queue_name
    from spacer_worker.constants import HIGH_SPEC_KINDS, QueueKind
    from spacer_worker.messages.table import TASKS

    # Every kind a contract task goes to, and every high-spec kind, has a
    # queue: the kinds are the QueueKind table.
    used = {row.queue for row in TASKS.values()} | set(HIGH_SPEC_KINDS.values())
    assert used == set(QueueKind)
    names = [queue_name(kind) for kind in QueueKind]
    assert len(set(names)) == len(names)

    queues = build_config()['task_queues']
    assert [(q.name, q.exchange.name, q.routing_key) for q in queues] == [
        (name, name, name) for name in names]
    assert len({q.exchange.name for q in queues}) == len(queues)


def test_training_progress_is_published_with_plain_numbers():
    from spacer_worker.worker.adapters import SpacerTask

    published = []

    class Recorder(SpacerTask):
        name = 'test.recorder'

        def publish_progress(self, meta):
            published.append(meta)

    report = Recorder().training_progress()
    report(epoch=1, nbr_epochs=3, ref_acc=0.5)        # the trainer's call
    report(2, 3, 0.75, done=0, total=1)               # process_job's call
    assert published == [
        {'epoch': 1, 'epochs': 3, 'ref_acc': 0.5},
        {'epoch': 2, 'epochs': 3, 'ref_acc': 0.75, 'done': 0, 'total': 1}]


@pytest.mark.parametrize('stage', ['encode', 'decode'])
def test_a_soft_time_limit_inside_kombus_serializer_still_reads_as_one(
        stage):
    # The soft time limit is a signal: it can land anywhere, also inside
    # kombu's (de)serialization of a progress update, which wraps whatever
    # interrupts it as an EncodeError or DecodeError; the job's failure
    # line must still be billiard's SoftTimeLimitExceeded (CoralNet sorts
    # by it). kombu's own wrapping, with a serializer that is interrupted.
    from celery.exceptions import SoftTimeLimitExceeded
    from celery.utils.threads import LocalStack
    from kombu import serialization

    from spacer_worker.worker.adapters import SpacerTask

    def interrupted(*_args):
        raise SoftTimeLimitExceeded()

    name = f'interrupted-{stage}'
    serialization.register(
        name, interrupted if stage == 'encode' else (lambda obj: '{}'),
        interrupted if stage == 'decode' else (lambda text: {}),
        content_type=f'application/x-{name}')

    class Interrupted(SpacerTask):
        name = 'test.interrupted'

        def update_state(self, task_id=None, state=None, meta=None, **kw):
            content_type, encoding, data = serialization.dumps(meta, name)
            serialization.loads(data, content_type, encoding)

    task = Interrupted()
    task.request_stack = LocalStack()  # as binding to an app would
    task.push_request(id='t1', is_eager=False)
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            task.publish_progress({'epoch': 1})
    finally:
        task.pop_request()
        serialization.unregister(name)


def test_payloads_that_are_not_messages_are_refused_by_name():
    from spacer_worker.messages import ClassifyFeaturesMsg, ExtractFeaturesMsg
    from spacer_worker.worker.adapters import decode_payload
    with pytest.raises(MessageError, match='not valid JSON'):
        decode_payload('spacer.x', ExtractFeaturesMsg, '{oops')
    with pytest.raises(MessageError, match='got int'):
        decode_payload('spacer.x', ExtractFeaturesMsg, 3)
    with pytest.raises(MessageError, match='job_token'):
        decode_payload('spacer.x', ClassifyFeaturesMsg, {'job_token': 5})
