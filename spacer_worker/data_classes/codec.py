"""One declarative way to define a message and its JSON (de)serialization.

A message is a dataclass deriving from :class:`Message`; each field names a
:class:`Codec` with :func:`field`. The codec does three things for its
field, so no class writes its own ``serialize``/``deserialize`` pair:

* ``convert(value)``: what the constructor accepts (validation + light
  normalisation, e.g. lists of pairs become lists of tuples);
* ``encode(value)``: to JSON-native data, in PySpacer's exact shape;
* ``decode(data)``: from JSON-native data.

Every failure surfaces as a typed error from :mod:`spacer_worker.exceptions`
naming the class, the field and the offending value, with the original
exception chained. A value that is not a message but has a fixed JSON shape
(``ImageLabels``) uses :class:`Encoded` with one codec for the whole value.

Nothing here imports numpy: JSON-facing code must run on a client with only
celery installed.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import reprlib
import sys
import threading
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any, ClassVar, TypeVar

from spacer_worker import config
from spacer_worker.exceptions import (
    ClassNotFoundError,
    MessageError,
    MissingKeyError,
    NotASubclassError,
    SpacerError,
    UnknownClassError,
)

T = TypeVar('T')

_MAX_REPR = 120
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 4, 8, 8, 6
_REPR.maxstring = _REPR.maxother = _MAX_REPR


def show(value: Any) -> str:
    """A short repr for error messages (payloads can be megabytes, so
    containers are abbreviated before they are turned into text)."""
    text = _REPR.repr(value)
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR - 15] + f'... ({len(text)} chars)'
    return text


class Invalid(Exception):
    """Raised by codecs for a bad value; turned into a typed error by the
    caller, which knows the class and field.

    ``error_type`` picks the exception class the user sees (MessageError
    unless a more precise one fits, e.g. RowColumnInvalidError); ``path``
    locates the bad item inside the field (``[3]``, ``['weights']``);
    ``named`` says the reason already names its subject (an error raised by
    a nested message), so the outer value need not be shown.
    """

    def __init__(self, reason: str,
                 error_type: type[SpacerError] = MessageError,
                 path: str = '', named: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.path = path
        self.named = named

    def within(self, step: str) -> Invalid:
        return Invalid(self.reason, self.error_type, step + self.path,
                       self.named)


def as_invalid(error: BaseException) -> Invalid:
    if isinstance(error, Invalid):
        return error
    if isinstance(error, RecursionError):
        return Invalid('is nested too deeply to be a message')
    if isinstance(error, SpacerError):
        return Invalid(str(error), type(error), named=True)
    return Invalid(f'{type(error).__name__}: {error}')


_NO_VALUE = object()


def relabel(error: BaseException, where: str,
            value: Any = _NO_VALUE) -> SpacerError:
    """The typed error for ``error`` at ``where`` (``Class.field``), keeping
    its class so ``except InvalidLocationError`` still works upstream.
    The bad value is shown when the reason does not already locate it."""
    invalid = as_invalid(error)
    text = where + invalid.path
    if value is not _NO_VALUE and not invalid.path and not invalid.named:
        text += f' = {show(value)}'
    try:
        return invalid.error_type(f'{text}: {invalid.reason}')
    except TypeError:
        return MessageError(f'{text}: {invalid.reason}')


# --------------------------------------------------------------------------
# Codecs


class Codec:
    """Base codec: identity on all three paths.

    ``native`` says converted values are already JSON-native (ints, strs,
    floats and lists/tuples of them), so encoding copies containers
    instead of walking every item.
    """

    native = False

    def convert(self, value: Any) -> Any:
        return value

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, data: Any) -> Any:
        return self.convert(data)


class Scalar(Codec):
    """A JSON scalar of given Python types (bool is never an int here)."""

    native = True

    def __init__(self, *types: type, optional: bool = False, name: str = ''):
        self.types = types
        self.optional = optional
        self.name = name or ' or '.join(t.__name__ for t in types)

    def convert(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) and bool not in self.types:
            raise Invalid(f'expected {self.name}, got {show(value)}')
        if isinstance(value, self.types):
            if float in self.types and not isinstance(value, float) \
                    and int not in self.types:
                return float(value)
            return value
        # numpy scalars and other number-likes.
        if int in self.types and hasattr(value, '__index__'):
            return operator.index(value)
        if float in self.types and hasattr(value, '__float__') \
                and not isinstance(value, str):
            return float(value)
        raise Invalid(f'expected {self.name}'
                      f'{" or None" if self.optional else ""}, '
                      f'got {show(value)} ({type(value).__name__})')


STR = Scalar(str, name='a string')
OPT_STR = Scalar(str, optional=True, name='a string')
INT = Scalar(int, name='an integer')
BOOL = Scalar(bool, name='a boolean')
NUMBER = Scalar(float, int, name='a number')


class Floats(Codec):
    """A list of numbers (scores, accuracies), checked in one pass: these
    lists hold thousands of values in classify results."""

    native = True
    _PLAIN = frozenset((float, int))

    def convert(self, value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f'expected a list of numbers, got {show(value)} '
                          f'({type(value).__name__})')
        if set(map(type, value)) <= self._PLAIN:
            return list(value)
        return [NUMBER.convert(x) for x in value]

    def encode(self, value: Any) -> list:
        return list(value)


FLOATS = Floats()


class LabelIdCodec(Codec):
    """A class label id: an int or a str (scikit-learn target)."""

    native = True

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not hasattr(value, '__index__'):
            raise Invalid(f'label ids must be int or str, got {show(value)} '
                          f'({type(value).__name__})')
        return operator.index(value)


LABEL_ID = LabelIdCodec()


class Choice(Codec):
    """A value of a ``str`` enum, stored as its plain string."""

    def __init__(self, enum: type,
                 error_type: type[SpacerError] = MessageError):
        self.enum = enum
        self.error_type = error_type
        self._by_value = {m.value: m for m in enum}

    def convert(self, value: Any) -> Any:
        if isinstance(value, self.enum):
            return value
        if type(value) is str and value in self._by_value:
            return self._by_value[value]
        if not isinstance(value, str):
            # Enum lookup of a JSON container would repr it whole.
            allowed = ', '.join(repr(m.value) for m in self.enum)
            raise Invalid(f'{show(value)} is not one of {allowed}',
                          self.error_type)
        try:
            return self.enum(value)
        except (ValueError, TypeError):
            allowed = ', '.join(repr(m.value) for m in self.enum)
            raise Invalid(f'{show(value)} is not one of {allowed}',
                          self.error_type) from None

    def encode(self, value: Any) -> str:
        return value._value_  # Enum's .value property is slow


class ListOf(Codec):
    def __init__(self, item: Codec, *, min_len: int = 0, what: str = ''):
        self.item = item
        self.min_len = min_len
        self.what = what or 'items'
        self.native = item.native

    def _check(self, value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f'expected a list of {self.what}, got '
                          f'{show(value)} ({type(value).__name__})')
        if len(value) < self.min_len:
            raise Invalid(f'is empty; it needs at least {self.min_len} '
                          f'entry (a list of {self.what})' if not value else
                          f'needs at least {self.min_len} {self.what}, got '
                          f'{len(value)}')

    def _each(self, value: Any, op: Callable[[Any], Any]) -> list:
        self._check(value)
        out = []
        for index, item in enumerate(value):
            try:
                out.append(op(item))
            except (Invalid, SpacerError) as e:
                raise as_invalid(e).within(f'[{index}]') from e
        return out

    def convert(self, value: Any) -> list:
        return self._each(value, self.item.convert)

    def encode(self, value: Any) -> list:
        if self.native:
            return list(value)
        return [self.item.encode(v) for v in value]

    def decode(self, data: Any) -> list:
        return self._each(data, self.item.decode)


class TupleOf(Codec):
    """A fixed-length tuple; JSON arrays become tuples (as PySpacer does)."""

    def __init__(self, *items: Codec, what: str = ''):
        self.items = items
        self.what = what or f'{len(items)}-tuple'
        self.native = all(c.native for c in items)

    def _each(self, value: Any, ops: list[Callable[[Any], Any]]) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(ops):
            raise Invalid(f'expected a {self.what}, got {show(value)}')
        try:
            return tuple(op(v) for op, v in zip(ops, value, strict=True))
        except (Invalid, SpacerError) as e:
            invalid = as_invalid(e)
            raise Invalid(f'{self.what} {show(value)}: {invalid.reason}',
                          invalid.error_type) from e

    def convert(self, value: Any) -> tuple:
        return self._each(value, [c.convert for c in self.items])

    def encode(self, value: Any) -> tuple:
        # json.dumps writes tuples and lists alike; keep tuples as given.
        if self.native:
            return value
        return tuple(c.encode(v) for c, v in zip(self.items, value, strict=True))

    def decode(self, data: Any) -> tuple:
        return self._each(data, [c.decode for c in self.items])


class DictOf(Codec):
    def __init__(self, key: Codec, value: Codec):
        self.key = key
        self.value = value
        self.native = key.native and value.native

    def _each(self, data: Any, key_op: Callable, value_op: Callable) -> dict:
        if not isinstance(data, Mapping):
            raise Invalid(f'expected a mapping, got {show(data)} '
                          f'({type(data).__name__})')
        out = {}
        for k, v in data.items():
            try:
                out[key_op(k)] = value_op(v)
            except (Invalid, SpacerError) as e:
                raise as_invalid(e).within(f'[{show(k)}]') from e
        return out

    def convert(self, value: Any) -> dict:
        return self._each(value, self.key.convert, self.value.convert)

    def encode(self, value: Any) -> dict:
        if self.native:
            return dict(value)
        return {self.key.encode(k): self.value.encode(v)
                for k, v in value.items()}

    def decode(self, data: Any) -> dict:
        return self._each(data, self.key.decode, self.value.decode)


class JsonText(Codec):
    """A value whose JSON form is the ``json.dumps`` text of another codec's
    form; PySpacer keys ImageLabels by ``json.dumps(loc.serialize())``."""

    def __init__(self, inner: Codec):
        self.inner = inner

    def convert(self, value: Any) -> Any:
        return self.inner.convert(value)

    def encode(self, value: Any) -> str:
        return json.dumps(self.inner.encode(value))

    def decode(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise Invalid(f'expected JSON text, got {show(data)}')
        try:
            parsed = json.loads(data)
        except ValueError as e:
            raise Invalid(f'{show(data)} is not JSON ({e})') from e
        return self.inner.decode(parsed)


class Nested(Codec):
    """Another serializable class (anything with serialize/deserialize)."""

    def __init__(self, cls: Any, name: str = ''):
        self.cls = cls
        self.name = name

    def _cls(self) -> type:
        return self.cls() if callable(self.cls) and not isinstance(
            self.cls, type) else self.cls

    def convert(self, value: Any) -> Any:
        cls = self._cls()
        if not isinstance(value, cls):
            got = (f'{show(value)} ({type(value).__name__})'
                   if type(value).__module__ == 'builtins'
                   else f'a {type(value).__name__}')
            name = self.name or cls.__name__
            article = 'an' if name[0] in 'AEIOUaeiou' else 'a'
            raise Invalid(f'expected {article} {name}, got {got}')
        return value

    def encode(self, value: Any) -> Any:
        return value.serialize()

    def decode(self, data: Any) -> Any:
        return self._cls().deserialize(data)


class Optional(Codec):
    def __init__(self, inner: Codec):
        self.inner = inner
        self.native = inner.native

    def convert(self, value: Any) -> Any:
        return None if value is None else self.inner.convert(value)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, data: Any) -> Any:
        return None if data is None else self.inner.decode(data)


# --------------------------------------------------------------------------
# Messages

CodecSpec = Codec | Callable[[Mapping[str, Any]], Codec]


def field(codec: CodecSpec, *, default: Any = dataclasses.MISSING,
          default_factory: Any = dataclasses.MISSING,
          aliases: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Declare a message field. ``codec`` may be a function of the fields
    before it (by name) when the shape depends on them (JobMsg.tasks).
    ``aliases`` are legacy JSON keys accepted on decode."""
    return dataclasses.field(
        default=default, default_factory=default_factory,
        metadata={'codec': codec, 'aliases': aliases}, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One message field as the codec sees it."""
    name: str
    codec: CodecSpec
    keys: tuple[str, ...]  # JSON keys: the name, then legacy aliases
    field: dataclasses.Field

    def codec_for(self, values: Mapping[str, Any]) -> Codec:
        spec = self.codec
        return spec if isinstance(spec, Codec) else spec(values)

    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def required(self) -> bool:
        return (self.field.default is dataclasses.MISSING
                and self.field.default_factory is dataclasses.MISSING)


# Set by Message.deserialize around its constructor call, consumed by the
# first __post_init__ it reaches (per thread: workers decode concurrently).
_decoded = threading.local()


class Message:
    """Base of every dataclass message: validation at construction, one
    encode path (``serialize``), one decode path (``deserialize``).

    Subclasses are ``@dataclass`` classes whose fields are declared with
    :func:`field`, in PySpacer's JSON key order; ``validate()`` may add
    checks across fields.
    """

    @classmethod
    def _specs(cls) -> tuple[_Spec, ...]:
        cached = cls.__dict__.get('_specs_cache')
        if cached is None:
            cached = tuple(
                _Spec(f.name, f.metadata['codec'],
                      (f.name, *f.metadata['aliases']), f)
                for f in dataclasses.fields(cls) if 'codec' in f.metadata)
            cls._specs_cache = cached
            cls._names_cache = frozenset(s.name for s in cached)
            cls._keys_cache = frozenset(k for s in cached for k in s.keys)
        return cached

    def __post_init__(self) -> None:
        if getattr(_decoded, 'pending', False):
            # Built by deserialize from values its codecs already checked:
            # only the checks across fields remain.
            _decoded.pending = False
            self.validate()
            return
        self._convert_fields()

    def _convert_fields(self) -> None:
        values: dict[str, Any] = {}
        for spec in self._specs():
            value = getattr(self, spec.name)
            try:
                converted = spec.codec_for(values).convert(value)
            except (Invalid, SpacerError, TypeError, ValueError, KeyError,
                    AttributeError) as e:
                raise relabel(e, f'{type(self).__name__}.{spec.name}',
                              value) from e
            values[spec.name] = converted
            if converted is not value:
                object.__setattr__(self, spec.name, converted)
        self.validate()

    def __setattr__(self, name: str, value: Any) -> None:
        # As in PySpacer, assigning a field after construction is not an
        # error in itself: a value that does not pass is kept as given and
        # refused where the message is used (check(): submit, process_job;
        # deserialize on the worker), so a caller may set fields in any
        # order. A value that passes is stored converted, as the
        # constructor stores it.
        if name not in self.__dict__:   # the constructor setting it
            object.__setattr__(self, name, value)
            return
        self._specs()
        object.__setattr__(self, name, value)
        if name not in self._names_cache:
            return
        try:
            self._convert_fields()
        except (SpacerError, AssertionError):
            self.__dict__['_unchecked'] = True
        else:
            self.__dict__.pop('_unchecked', None)

    def check(self) -> None:
        """Raise the typed error for a field assigned a value that does not
        pass; nothing for a message built or assigned valid values."""
        if self.__dict__.get('_unchecked'):
            self._convert_fields()
            self.__dict__.pop('_unchecked', None)
        for spec in self._specs():
            value = self.__dict__[spec.name]
            if isinstance(value, Message):
                value.check()
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Message):
                        item.check()

    def __eq__(self, other: object) -> bool:
        # PySpacer compares every public attribute, fields and any other
        # a caller set; ours are the same plus nothing private.
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _public_state(self) == _public_state(other)

    __hash__ = None  # type: ignore[assignment]

    def validate(self) -> None:
        """Checks across fields; override where needed."""

    def serialize(self) -> dict:
        """PySpacer's JSON-native dict for this message. A field assigned a
        value that does not pass is written as given (PySpacer writes
        what it holds too); ``deserialize`` refuses it."""
        values = self.__dict__
        if values.get('_unchecked'):
            return self._serialize_as_given()
        return {spec.name: spec.codec_for(values).encode(values[spec.name])
                for spec in self._specs()}

    def _serialize_as_given(self) -> dict:
        values = self.__dict__
        out = {}
        for spec in self._specs():
            value = values[spec.name]
            try:
                out[spec.name] = spec.codec_for(values).encode(
                    spec.codec_for(values).convert(value))
            except (Invalid, SpacerError, AssertionError, TypeError,
                    ValueError, KeyError, AttributeError):
                out[spec.name] = _as_json(value)
        return out

    @classmethod
    def deserialize(cls: type[T], data: Any) -> T:
        """Build from PySpacer's JSON-native dict; a bad payload raises a
        MessageError (or a more precise PermanentError) naming the field."""
        if not isinstance(data, Mapping):
            raise MessageError(
                f'{cls.__name__}: expected a JSON object, got {show(data)} '
                f'({type(data).__name__})')
        specs = cls._specs()
        unknown = [k for k in data if k not in cls._keys_cache]
        if unknown:
            raise MessageError(
                f'{cls.__name__}: unknown key(s) {", ".join(map(repr, unknown))}'
                f'; expected {", ".join(s.name for s in specs)}.')
        values: dict[str, Any] = {}
        for spec in specs:
            present = [k for k in spec.keys if k in data]
            if len(present) > 1:
                raise MessageError(
                    f'{cls.__name__}: keys {" and ".join(map(repr, present))} '
                    f'both given; they mean the same field, give one.')
            if not present:
                if spec.required:
                    raise MissingKeyError(
                        f'{cls.__name__}: missing key {spec.name!r}.')
                values[spec.name] = spec.default()
                continue
            key = present[0]
            raw = data[key]
            try:
                values[spec.name] = spec.codec_for(values).decode(raw)
            except (Invalid, SpacerError, TypeError, ValueError, KeyError,
                    AttributeError, RecursionError) as e:
                raise relabel(e, f'{cls.__name__}.{key}', raw) from e
        # Through the constructor, as PySpacer does, so a subclass's or a
        # patched __init__ runs; the values are already checked, so the
        # constructor's own pass is skipped (see __post_init__).
        _decoded.pending = True
        try:
            return cls(**values)
        finally:
            _decoded.pending = False


def _public_state(message: Message) -> dict:
    return {k: v for k, v in vars(message).items() if not k.startswith('_')}


def _as_json(value: Any) -> Any:
    """A value's plain JSON shape, for a field holding what its codec
    refuses (so the receiver, not serialize, names the fault)."""
    if isinstance(value, Mapping):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    serialize = getattr(value, 'serialize', None)
    if callable(serialize):
        return serialize()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Encoded:
    """Mixin for a value class whose whole JSON form is one codec
    (``_codec``) over its ``_encoded()`` state, rebuilt by ``_from_decoded``."""

    _codec: ClassVar[Codec]

    def _encoded(self) -> Any:
        raise NotImplementedError

    @classmethod
    def _from_decoded(cls, value: Any) -> Any:
        raise NotImplementedError

    def serialize(self) -> Any:
        return self._codec.encode(self._encoded())

    @classmethod
    def deserialize(cls, data: Any) -> Any:
        try:
            value = cls._codec.decode(data)
        except (Invalid, SpacerError, TypeError, ValueError, KeyError,
                AttributeError, RecursionError) as e:
            raise relabel(e, cls.__name__, data) from e
        return cls._from_decoded(value)


# --------------------------------------------------------------------------
# Class paths in messages (extractors, trainers)


def resolve_class(class_path: Any, *, kind: str, builtins: Mapping[str, type],
                  setting: str, base: type) -> type:
    """The class a message's ``class_path`` names, from an allowlist only.

    ``builtins`` maps every accepted spelling (PySpacer's and ours) to our
    class; the ``setting`` (comma-separated class paths) admits more.
    Nothing outside the allowlist is ever imported: a message must not be
    able to make a worker import arbitrary modules.
    """
    if not isinstance(class_path, str):
        raise MessageError(f'{kind} class_path must be a string, got '
                           f'{show(class_path)} ({type(class_path).__name__}).')
    if class_path in builtins:
        return builtins[class_path]
    extra = [p.strip() for p in (config.get(setting) or '').split(',')
             if p.strip()]
    if class_path not in extra:
        names = sorted({cls.__name__ for cls in builtins.values()})
        raise _refusal_type(class_path, base)(
            f'{kind} class_path {class_path!r} is not allowed. Built-in: '
            f'{", ".join(names)} (under spacer.* or spacer_worker.* module '
            f'paths). To allow your own class, '
            f'add its path to the {setting} setting (SPACER_{setting}).')
    module_path, _, name = class_path.rpartition('.')
    try:
        cls = getattr(import_module(module_path), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise UnknownClassError(
            f'{kind} class_path {class_path!r} is allowed by {setting} but '
            f'cannot be imported: {type(e).__name__}: {e}') from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UnknownClassError(
            f'{kind} class_path {class_path!r} names {show(cls)}, which is '
            f'not a {base.__name__} subclass.')
    return cls


def _refusal_type(class_path: str, base: type) -> type[UnknownClassError]:
    """The refusal's class, under what PySpacer (which imports any path)
    would have raised. Only our own modules already loaded are looked
    into: nothing is imported, so a message runs no code of its choosing
    (not even a module of ours that acts on import)."""
    module_path, _, name = class_path.rpartition('.')
    top, _, rest = module_path.partition('.')
    module = sys.modules.get(f'spacer_worker.{rest}') \
        if top in ('spacer', 'spacer_worker') and rest else None
    if module is None:
        return UnknownClassError
    # The module's own dict: a lazy export (module __getattr__) would
    # import on lookup.
    found = vars(module).get(name)
    if found is None:
        return ClassNotFoundError
    if not (isinstance(found, type) and issubclass(found, base)):
        return NotASubclassError
    return UnknownClassError


class Description:
    """Base of what a message carries as ``{'class_path': ..., **params}``
    (extractors, trainers): equal when their JSON is equal, built from a
    dict by the subclass's allowlisted ``deserialize``."""

    # PySpacer's path for a built-in; read only from the class's own dict,
    # so a user's subclass serializes under its own path.
    PYSPACER_CLASS_PATH: str | None = None

    @classmethod
    def class_path(cls) -> str:
        own = cls.__dict__.get('PYSPACER_CLASS_PATH')
        return own or f'{cls.__module__}.{cls.__qualname__}'

    def serialize(self) -> dict:
        return {'class_path': self.class_path()}

    @staticmethod
    def split_class_path(data: Any, kind: str) -> tuple[Any, dict]:
        """(class_path, the other keys) of a description's dict."""
        if not isinstance(data, Mapping):
            raise MessageError(f'{kind}: expected a JSON object, got '
                               f'{show(data)}.')
        kwargs = dict(data)
        if 'class_path' not in kwargs:
            raise MessageError(f'{kind}: missing key class_path in '
                               f'{show(data)}.')
        return kwargs.pop('class_path'), kwargs

    @staticmethod
    def build(cls: type, kwargs: dict, data: Any) -> Any:
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise MessageError(
                f'{cls.__name__}: cannot be built from {show(data)}: {e}') from e

    def __repr__(self) -> str:
        return str(self.serialize())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Description):
            return NotImplemented
        return self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]
