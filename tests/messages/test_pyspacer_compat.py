"""Messages are byte-compatible with PySpacer 0.14.0 in both directions.

Given the same example built by PySpacer and by us (tests/messages/cases.py),
when each side serializes and the other reads it back,
then the JSON text is identical everywhere and our decoded object equals
the one we built. One reference run covers the whole table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacer_worker import data_classes, extractors, messages, train_classifier
from tests.messages.cases import LEGACY_PAYLOADS, build_cases
from tests.reference import run_reference

CASES_SOURCE = (Path(__file__).parent / 'cases.py').read_text()
OURS = build_cases(messages, data_classes, extractors, train_classifier)
OURS_BY_ID = {case_id: (name, obj) for case_id, name, obj in OURS}

REFERENCE_CODE = '''
from spacer import data_classes as D, extractors as E, messages as M
from spacer import train_classifier as T

def cls_of(name):
    for module in (M, D, E, T):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)

ns = {}
exec(PAYLOAD['cases_source'], ns)
RESULT = {'serialized': {}, 'reread': {}, 'legacy': {}, 'legacy_reread': {}}
for case_id, name, obj in ns['build_cases'](M, D, E, T):
    RESULT['serialized'][case_id] = json.dumps(obj.serialize())
for case_id, name, text in PAYLOAD['ours']:
    back = cls_of(name).deserialize(json.loads(text))
    RESULT['reread'][case_id] = json.dumps(back.serialize())
for case_id, name, data in ns['LEGACY_PAYLOADS']:
    back = cls_of(name).deserialize(data)
    RESULT['legacy'][case_id] = json.dumps(back.serialize())
for case_id, name, text in PAYLOAD['ours_legacy']:
    back = cls_of(name).deserialize(json.loads(text))
    RESULT['legacy_reread'][case_id] = json.dumps(back.serialize())
'''


def cls_of(name: str) -> type:
    for module in (messages, data_classes, extractors, train_classifier):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def our_json(case_id: str) -> str:
    return json.dumps(OURS_BY_ID[case_id][1].serialize())


@pytest.fixture(scope='module')
def reference(pyspacer_reference):
    payload = {
        'cases_source': CASES_SOURCE,
        'ours': [(case_id, name, our_json(case_id))
                 for case_id, name, _ in OURS],
        'ours_legacy': [(case_id, name,
                         json.dumps(cls_of(name).deserialize(data).serialize()))
                        for case_id, name, data in LEGACY_PAYLOADS],
    }
    return run_reference(REFERENCE_CODE, payload)


def test_table_covers_every_message_type():
    names = {name for _, name, _ in OURS}
    wanted = {cls.__name__ for cls in (
        *messages.TASK_MESSAGES.values(), *messages.RETURN_MESSAGES.values(),
        messages.JobMsg, messages.JobReturnMsg, messages.TrainingTaskLabels,
        data_classes.DataLocation, data_classes.ImageLabels,
        data_classes.ValResults)}
    assert wanted <= names
    job_tasks = {obj.task_name for _, name, obj in OURS if name == 'JobMsg'}
    assert job_tasks == set(messages.TaskName)
    failed = [obj for _, name, obj in OURS
              if name == 'JobReturnMsg' and not obj.ok]
    assert failed


@pytest.mark.reference
@pytest.mark.parametrize('case_id', list(OURS_BY_ID))
def test_pyspacer_and_we_write_the_same_json(reference, case_id):
    assert our_json(case_id) == reference['serialized'][case_id]


@pytest.mark.reference
@pytest.mark.parametrize('case_id', list(OURS_BY_ID))
def test_pyspacer_json_reads_here_as_an_equal_object(reference, case_id):
    name, built = OURS_BY_ID[case_id]
    text = reference['serialized'][case_id]

    decoded = cls_of(name).deserialize(json.loads(text))

    assert decoded == built
    assert json.dumps(decoded.serialize()) == text


@pytest.mark.reference
@pytest.mark.parametrize('case_id', list(OURS_BY_ID))
def test_our_json_reads_in_pyspacer_unchanged(reference, case_id):
    assert reference['reread'][case_id] == our_json(case_id)


@pytest.mark.reference
@pytest.mark.parametrize('case_id,name,data', LEGACY_PAYLOADS,
                         ids=[c[0] for c in LEGACY_PAYLOADS])
def test_legacy_payloads_read_as_pyspacer_reads_them(reference, case_id,
                                                     name, data):
    decoded = cls_of(name).deserialize(data)
    ours = decoded.serialize()
    # PySpacer 0.14 reads what we write back as it reads the payload.
    assert reference['legacy_reread'][case_id] == reference['legacy'][case_id]
    if 'trainer_name' in json.dumps(data):
        # A 0.13 message is answered in 0.13's shape, which 0.13 reads.
        assert 'trainer_name' in json.dumps(ours)
        assert '"trainer"' not in json.dumps(ours)
    else:
        assert json.dumps(ours) == reference['legacy'][case_id]
