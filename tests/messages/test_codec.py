"""The codec on its own: a message class declared with fields and codecs,
and nothing else, validates, encodes and decodes with errors that name the
class, the field and the value."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from spacer_worker.constants import ClassifierType
from spacer_worker.data_classes import codec
from spacer_worker.data_classes.codec import (
    INT,
    OPT_STR,
    STR,
    Choice,
    DictOf,
    ListOf,
    Message,
    Nested,
    Optional,
    TupleOf,
    field,
    resolve_class,
)
from spacer_worker.exceptions import MessageError, UnknownClassError


@dataclasses.dataclass(eq=True)
class Point(Message):
    row: int = field(INT)
    col: int = field(INT)


@dataclasses.dataclass(eq=True)
class Sample(Message):
    name: str = field(STR, aliases=('old_name',))
    kind: str = field(Choice(ClassifierType))
    points: list[Point] = field(ListOf(Nested(Point), what='points'))
    pairs: list[tuple[int, int]] = field(
        ListOf(TupleOf(INT, INT, what='pair'), what='pairs'))
    extra: dict[str, int] = field(DictOf(STR, INT), default_factory=dict)
    note: str | None = field(OPT_STR, default=None)
    limit: int | None = field(Optional(INT), default=None)

    def validate(self) -> None:
        if len(self.points) > 3:
            raise MessageError(f'Sample.points: at most 3, got '
                               f'{len(self.points)}.')


def sample(**changes) -> Sample:
    values = dict(name='s', kind='MLP', points=[Point(1, 2)],
                  pairs=[(1, 2)], extra={'a': 1})
    values.update(changes)
    return Sample(**values)


def test_encode_then_decode_gives_the_same_message_and_json():
    msg = sample(note='n', limit=4)
    data = msg.serialize()
    assert data == {'name': 's', 'kind': 'MLP',
                    'points': [{'row': 1, 'col': 2}], 'pairs': [(1, 2)],
                    'extra': {'a': 1}, 'note': 'n', 'limit': 4}
    back = Sample.deserialize(json.loads(json.dumps(data)))
    assert back == msg
    assert back.pairs == [(1, 2)]           # tuples again, as given
    assert back.serialize() == data


def test_constructor_errors_name_class_field_and_value():
    with pytest.raises(MessageError, match=r"Sample\.kind.*'SVM'"):
        sample(kind='SVM')
    with pytest.raises(MessageError, match=r'Sample\.points.*row'):
        sample(points=[{'row': 'x', 'col': 1}])
    with pytest.raises(MessageError, match=r'Sample\.pairs'):
        sample(pairs=[(1, 2, 3)])
    with pytest.raises(MessageError, match='at most 3'):
        sample(points=[Point(0, 0)] * 4)


def test_a_bad_assignment_is_refused_where_the_message_is_used():
    # PySpacer's semantics: assigning is not an error in itself; check()
    # (submit, process_job) and deserialize (the worker) name the field.
    msg = sample()
    msg.name = 5
    assert msg.name == 5
    with pytest.raises(MessageError, match=r'Sample\.name'):
        msg.check()
    assert msg.serialize()['name'] == 5
    with pytest.raises(MessageError, match=r'Sample\.name'):
        Sample.deserialize(msg.serialize())
    msg.name = 't'
    msg.check()
    assert msg.serialize()['name'] == 't'


def test_decode_refuses_unknown_missing_and_doubled_keys():
    data = sample().serialize()
    with pytest.raises(MessageError, match="unknown key.*'colour'"):
        Sample.deserialize({**data, 'colour': 'red'})
    without = {k: v for k, v in data.items() if k != 'kind'}
    with pytest.raises(MessageError, match="missing key 'kind'"):
        Sample.deserialize(without)
    with pytest.raises(MessageError, match="'name' and 'old_name'"):
        Sample.deserialize({**data, 'old_name': 'o'})
    with pytest.raises(MessageError, match='expected a JSON object'):
        Sample.deserialize([data])


def test_a_legacy_key_decodes_into_its_field():
    data = sample().serialize()
    data['old_name'] = data.pop('name')
    assert Sample.deserialize(data).name == 's'


def test_a_decode_error_keeps_its_cause():
    data = sample().serialize()
    data['points'] = [{'row': 1}]
    with pytest.raises(MessageError, match=r"Sample\.points") as info:
        Sample.deserialize(data)
    assert info.value.__cause__ is not None


def test_defaults_fill_absent_optional_keys():
    data = sample().serialize()
    for key in ('extra', 'note', 'limit'):
        del data[key]
    back = Sample.deserialize(data)
    assert (back.extra, back.note, back.limit) == ({}, None, None)


def test_resolve_class_imports_nothing_outside_the_allowlist(monkeypatch):
    builtins = {'spacer.x.Point': Point}
    assert resolve_class('spacer.x.Point', kind='Thing', builtins=builtins,
                         setting='EXTRA_EXTRACTOR_CLASSES',
                         base=Message) is Point
    # A path not allowed is refused by name, and its module is never
    # imported (it would run code of the message's choosing).
    assert 'json.tool' not in sys.modules
    with pytest.raises(UnknownClassError, match='not allowed'):
        resolve_class('json.tool.main', kind='Thing', builtins=builtins,
                      setting='EXTRA_EXTRACTOR_CLASSES', base=Message)
    assert 'json.tool' not in sys.modules
    # Allowed by the setting, but not of the base class: refused too.
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES', 'json.JSONDecoder')
    with pytest.raises(UnknownClassError, match='not a Message subclass'):
        resolve_class('json.JSONDecoder', kind='Thing', builtins=builtins,
                      setting='EXTRA_EXTRACTOR_CLASSES', base=Message)


def test_show_keeps_long_values_short():
    assert len(codec.show('x' * 10_000)) < 200
