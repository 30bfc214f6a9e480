"""Fuzzed message JSON: decoding raises MessageError subclasses, nothing else.

A payload from the broker is untrusted. For every message type
(the four task messages, JobMsg, the return messages and the values
inside them), hypothesis decodes random JSON and mutated PySpacer JSON
(the serializations of ``tests/messages/cases.py``, byte-identical to
PySpacer's): values replaced by other JSON, keys dropped, added or
renamed, huge numbers, NaN, deep nesting, odd strings, and text-level
edits of the JSON itself fed through the worker's ``decode_payload``.
Each decode either gives a message or raises a MessageError subclass.

Example counts are moderate by default (2,700 cases); a long run
(45,000 cases, random seeds):
``SPACER_FUZZ_EXAMPLES=1000 python3 -m pytest tests/messages/test_decode_fuzz.py``
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacer_worker import data_classes, extractors, messages, train_classifier
from spacer_worker.exceptions import MessageError
from spacer_worker.worker.adapters import decode_payload
from tests.messages.cases import LEGACY_PAYLOADS, build_cases

# Per decoder for random JSON; x20 mutated PySpacer JSON; x10 edited text
# (60 -> 900 + 1200 + 600 cases by default).
EXAMPLES = int(os.environ.get('SPACER_FUZZ_EXAMPLES', '60'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize='SPACER_FUZZ_EXAMPLES' not in os.environ,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

CASES = build_cases(messages, data_classes, extractors, train_classifier)
DECODERS = {
    'DataLocation': data_classes.DataLocation.deserialize,
    'ImageLabels': data_classes.ImageLabels.deserialize,
    'ValResults': data_classes.ValResults.deserialize,
    'FeatureExtractor': extractors.FeatureExtractor.deserialize,
    'ClassifierTrainer': train_classifier.ClassifierTrainer.deserialize,
    **{name: getattr(messages, name).deserialize for name in (
        'ExtractFeaturesMsg', 'ExtractFeaturesReturnMsg',
        'TrainingTaskLabels', 'TrainClassifierMsg',
        'TrainClassifierReturnMsg', 'ClassifyFeaturesMsg',
        'ClassifyImageMsg', 'ClassifyReturnMsg', 'JobMsg', 'JobReturnMsg')},
}
SEEDS: list[tuple[str, Any]] = [
    (name, json.loads(json.dumps(obj.serialize())))
    for _, name, obj in CASES] + [
    (name, payload) for _, name, payload in LEGACY_PAYLOADS]
# What the broker delivers to the Celery tasks.
TASKS = [('spacer.extract_features', 'ExtractFeaturesMsg'),
         ('spacer.train_classifier', 'TrainClassifierMsg'),
         ('spacer.classify_features', 'ClassifyFeaturesMsg'),
         ('spacer.classify_image', 'ClassifyImageMsg'),
         ('spacer.process_job', 'JobMsg')]


def _values(value: Any, depth: int = 0) -> list[Any]:
    out = [value]
    if depth > 20:
        return out
    if isinstance(value, dict):
        for item in value.values():
            out.extend(_values(item, depth + 1))
    elif isinstance(value, list):
        for item in value:
            out.extend(_values(item, depth + 1))
    return out


def _keys(value: Any) -> set[str]:
    return {k for v in _values(value) if isinstance(v, dict) for k in v}


KEYS = sorted(set().union(*(_keys(seed) for _, seed in SEEDS)))

ODD_NUMBERS = [0, -1, 2 ** 31, 2 ** 63, -(2 ** 63) - 1, 10 ** 400,
               1e308, -0.0, math.nan, math.inf, -math.inf, 1e-320, True,
               False]
ODD_STRINGS = ['', ' ', 'minibatch', 'MLP', 'LR', 'auto', 'disabled',
               'filesystem', 's3', 'url', 'memory', '\x00', '\ud800',
               'é' * 3, '../../etc/passwd', 'spacer.extractors.Foo',
               'os.system', 'x' * 10_000,
               'spacer.extractors.efficientnet.EfficientNetExtractor',
               'spacer.train_classifier.MiniBatchTrainer', '{"a": 1}',
               '[1, 2]', 'null', json.dumps({'storage_type': 'memory',
                                             'key': 'k',
                                             'bucket_name': None})]

scalars = (st.none() | st.booleans() | st.integers()
           | st.sampled_from(ODD_NUMBERS) | st.floats()
           | st.text(max_size=20) | st.sampled_from(ODD_STRINGS))
json_values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.text(max_size=8)
                                     | st.sampled_from(KEYS),
                                     inner, max_size=5)),
    max_leaves=25)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 20:  # not into the deep nests of 'nest'
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


def _nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == 'list' else {'key': value}
    return value


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    path = draw(st.sampled_from(_paths(seed)))
    target: Any = seed
    for step in path:
        target = target[step]
    how = draw(st.sampled_from(['value', 'drop', 'add', 'rename', 'wrap',
                                'nest', 'swap', 'number', 'string']))
    if how == 'value':
        new = draw(json_values)
    elif how == 'drop' and isinstance(target, dict) and target:
        key = draw(st.sampled_from(sorted(target)))
        new = {k: v for k, v in target.items() if k != key}
    elif how == 'drop' and isinstance(target, list) and target:
        index = draw(st.integers(0, len(target) - 1))
        new = target[:index] + target[index + 1:]
    elif how == 'add' and isinstance(target, dict):
        new = {**target, draw(st.sampled_from(KEYS) | st.text(max_size=8)):
               draw(json_values)}
    elif how == 'add' and isinstance(target, list):
        new = [*target, draw(json_values)]
    elif how == 'rename' and isinstance(target, dict) and target:
        key = draw(st.sampled_from(sorted(target)))
        other = draw(st.sampled_from(KEYS))
        new = {(other if k == key else k): v for k, v in target.items()}
    elif how == 'wrap':
        try:
            text = json.dumps(target)
        except RecursionError:  # a deep nest from an earlier mutation
            text = '[]'
        new = draw(st.sampled_from([[target], {'key': target}, [target] * 2,
                                    text]))
    elif how == 'nest':
        new = _nested(draw(st.sampled_from([50, 1000, 5000])),
                      draw(st.sampled_from(['list', 'dict'])))
    elif how == 'swap':
        # A value from another message, in the wrong place.
        _, other = draw(st.sampled_from(SEEDS))
        new = draw(st.sampled_from(_values(other)))
    elif how == 'number':
        new = draw(st.sampled_from(ODD_NUMBERS))
    else:
        new = draw(st.sampled_from(ODD_STRINGS))
    return _replace(seed, path, new)


@st.composite
def mutated_seed(draw: st.DrawFn) -> tuple[str, Any]:
    name, data = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutated(data))
    # Sometimes decode it as a different message type.
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(sorted(DECODERS)))
    return name, data


def _decode(name: str, data: Any) -> None:
    try:
        DECODERS[name](data)
    except MessageError:
        pass


@pytest.mark.parametrize('name', sorted(DECODERS))
def test_random_json_raises_only_message_errors(name):
    @FUZZ
    @given(json_values)
    def check(data):
        _decode(name, data)

    check()


def test_mutated_pyspacer_json_raises_only_message_errors():
    @settings(FUZZ, max_examples=EXAMPLES * 20)
    @given(mutated_seed())
    def check(case):
        _decode(*case)

    check()


@st.composite
def edited_text(draw: st.DrawFn) -> tuple[str, str, str]:
    task, message_class = draw(st.sampled_from(TASKS))
    seeds = [data for name, data in SEEDS if name == message_class]
    text = json.dumps(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(['delete', 'insert', 'replace']))
        piece = draw(st.sampled_from(list('{}[]",:0-1e.') + [
            'null', 'true', 'NaN', 'Infinity', '1e999', '"x"', '\\u0000']))
        if how == 'delete':
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        elif how == 'insert':
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    return task, message_class, text


def test_edited_json_text_through_the_task_decoder():
    @settings(FUZZ, max_examples=EXAMPLES * 10)
    @given(edited_text(), st.booleans())
    def check(case, as_object):
        task, message_class, text = case
        payload: Any = text
        if as_object:
            try:
                payload = json.loads(text)
            except ValueError:
                pass
        try:
            decode_payload(task, getattr(messages, message_class), payload)
        except MessageError:
            pass

    check()


@pytest.mark.parametrize('case_id, name, obj', CASES,
                         ids=[case[0] for case in CASES])
def test_seeds_decode_as_themselves(case_id, name, obj):
    # The fuzz starts from valid PySpacer JSON.
    seed = json.loads(json.dumps(obj.serialize()))
    assert json.dumps(DECODERS[name](seed).serialize()) == json.dumps(seed)
