"""CoralNet's spec levels, on by default: HIGH jobs go to extract_high /
train_high with those queues' time limits; MEDIUM (or none) to the
contract's queues."""

from __future__ import annotations

import enum
import json

import pytest

from spacer_worker.celery import send_options
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.exceptions import MessageError
from tests.client.helpers import extract_job


class SpacerJobSpec(enum.Enum):   # CoralNet passes its own enum
    MEDIUM = 'medium'
    HIGH = 'high'


def _queued(redis_db, queue: str) -> list[dict]:
    keys = [k for k in redis_db.keys(f'{queue}*')
            if redis_db.type(k) == b'list']
    return [json.loads(m) for k in keys for m in redis_db.lrange(k, 0, -1)]


@pytest.mark.parametrize('spec, queue', [
    (SpacerJobSpec.HIGH, 'extract_high'), ('high', 'extract_high'),
    (SpacerJobSpec.MEDIUM, 'extract'), (None, 'extract')])
def test_coralnet_spec_level_picks_the_queue(app, redis_db, tmp_path, spec,
                                             queue):
    handle = CeleryQueue(app).submit_job(
        extract_job([tmp_path / 'big.jpg'], tmp_path, token='1'), 1, spec)
    assert handle.queue == queue
    [message] = _queued(redis_db, queue)
    hard = message['headers']['timelimit'][0]
    assert hard == (4 * 3600 if queue == 'extract_high' else 1800)


def test_high_trainings_get_days_and_big_ones_go_there_by_themselves():
    options = send_options('spacer.process_job',
                           {'task_name': 'train_classifier'}, 'high')
    assert options['queue'] == 'train_high'
    assert options['time_limit'] == 7 * 24 * 3600
    big = {'labels': {'train': {'data': {'a.npz': [[1, 1, 1]] * 150_000}},
                      'ref': {'data': {'b.npz': [[1, 1, 1]] * 30_000}},
                      'val': {'data': {'c.npz': [[1, 1, 1]] * 20_000}}}}
    assert send_options('spacer.train_classifier', big)['queue'] == \
        'train_high'
    big['labels']['val']['data']['c.npz'].pop()
    assert send_options('spacer.train_classifier', big)['queue'] == 'train'


def test_an_unknown_spec_level_is_named():
    with pytest.raises(MessageError, match='urgent'):
        send_options('spacer.extract_features', None, 'urgent')


def test_a_worker_keeps_the_longer_limits_of_high_queues():
    from spacer_worker.worker.request import _ceilings

    class Task:
        time_limit, soft_time_limit = 8 * 3600, int(8 * 3600 * 0.9)

    class Request:
        task = Task()
        delivery_info = {'routing_key': 'train_high'}

    assert _ceilings(Request()) == (7 * 24 * 3600, int(7 * 24 * 3600 * 0.9))
    Request.delivery_info = {'routing_key': 'train'}
    assert _ceilings(Request()) == (8 * 3600, int(8 * 3600 * 0.9))
