"""A pickle loader that makes classifier objects and nothing else.

``pickle.load`` imports and calls whatever a pickle names, and its BUILD
opcode sets attributes on whatever object is on the stack: a 60-byte
pickle can replace a method on a scikit-learn class for the rest of the
worker's life, and ``builtins.list(builtins.range(10**9))`` is a 43-byte
memory bomb. Refusing unknown globals (``find_class``) stops neither.

So every opcode that calls or changes something is handled here, on
the pure-Python unpickler (the C one has no hook for BUILD or REDUCE):

* a global is pushed as an inert :class:`~.pickle_allowlist.Global`
  token, never the class or function itself;
* REDUCE / NEWOBJ run only the entries of :mod:`.pickle_allowlist`,
  whose checks look at the arguments' exact types and sizes first;
* BUILD applies only to an object this load made, once, with a state
  checked for its type (canonical dtype states, array data matching the
  shape, attribute dicts that do not shadow methods);
* APPEND / SETITEM / ADDITEMS apply only to real lists, dicts and sets;
  INST, OBJ, extensions, persistent ids and out-of-band buffers are
  refused;
* the input size, the number of opcodes and container items and the
  nesting depth are bounded, and the finished object graph may contain
  only allowed types.

A static pass with ``pickletools.genops`` cannot do this alone: which
object BUILD or REDUCE acts on depends on the stack and the memo, which
only a run of the program knows. Loading in a subprocess would bound
memory but not the parent, which must unpickle the child's answer again.
"""

from __future__ import annotations

import _compat_pickle
import importlib.util
import inspect
import io
import pickle
import struct
import types
from collections import OrderedDict
from typing import Any

from spacer_worker.exceptions import ClassifierLoadError, UnsafePickleError
from spacer_worker.storage import pickle_allowlist as allow
from spacer_worker.storage.pickle_allowlist import Global, refuse

#: Opcodes, container items and made objects one load may process; a
#: CalibratedClassifierCV over 1000 classes needs about 30,000.
MAX_STEPS = 2_000_000
#: Deepest container nesting accepted in the loaded object (PySpacer's
#: classifiers nest about 8 deep).
MAX_DEPTH = 64
#: Stack marks open at once (PySpacer's classifiers: under 10).
MAX_MARKS = 1000
#: Distinct dict keys or set items of one load that may share a hash.
#: Numbers and tuples hash the same in every process, so a pickle can hold
#: thousands of different keys with one hash, and building their dict is
#: then quadratic (20,000 such keys: 260 KB, 1.7 s; 200,000: minutes of
#: CPU). Unequal keys with one hash are rare by nature (hash(-1) ==
#: hash(-2)); str and bytes hashes are salted per process.
MAX_SHARED_HASH = 16

_MISSING = object()
_FRESH, _BUILT = 'fresh', 'built'


class _ExactReader:
    """A file over bytes whose reads never come back short: a truncated
    pickle fails where it is cut, not later with misread lengths."""

    def __init__(self, data: bytes):
        self._file = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        chunk = self._file.read(n)
        if n is not None and n >= 0 and len(chunk) != n:
            raise pickle.UnpicklingError('pickle data was truncated')
        return chunk

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        if n != len(buffer):
            raise pickle.UnpicklingError('pickle data was truncated')
        return n

    def position(self) -> int:
        return self._file.tell()

    def readline(self) -> bytes:
        line = self._file.readline()
        if not line.endswith(b'\n'):
            raise pickle.UnpicklingError('pickle data was truncated')
        return line


def unreadable(where: str, error: BaseException,
               offset: int | None = None) -> ClassifierLoadError:
    """The error for a pickle that failed to decode: what failed and where,
    never the decoder's own message (it may quote the file's bytes)."""
    at = '' if offset is None else f' near byte {offset}'
    return ClassifierLoadError(
        f'{where} is not a readable classifier pickle: decoding failed '
        f'with {type(error).__name__}{at}. Its bytes are not quoted here; '
        f'check that it is a classifier PySpacer or spacer_worker wrote '
        f'and that it was stored whole.')


def _refused(name: str) -> Any:
    def handler(self: ClassifierUnpickler) -> None:
        raise refuse(f'the {name} opcode is not allowed in a classifier '
                     f'pickle')
    return handler


class ClassifierUnpickler(pickle._Unpickler):
    """Pure-Python unpickler restricted to :mod:`.pickle_allowlist`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, where: str = 'pickle') -> None:
        # latin1 reads Python 2 pickles (numpy data in sklearn 0.17 files).
        self._reader = _ExactReader(data)
        super().__init__(self._reader, fix_imports=True, encoding='latin1')
        self.where = where
        self._size = len(data)
        self.steps = 0
        # id -> (object, state): what this load made, kept alive so ids
        # stay unique; BUILD needs an object of this table in state FRESH.
        self._made: dict[int, list] = {}
        # hash -> the distinct keys seen with it (check_key).
        self._keys_by_hash: dict[int, list] = {}

    # --- bookkeeping used by the allowlist checks --------------------------

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise refuse(f'the pickle makes more than {MAX_STEPS} objects '
                         f'or items; a classifier needs far fewer')

    def _remember(self, obj: Any) -> Any:
        # A call may hand back an object it was given (tuple(t) is t):
        # keep its record, so nothing already built becomes fresh again.
        if self._record(obj) is None:
            self._made[id(obj)] = [obj, _FRESH]
        return obj

    def _record(self, obj: Any) -> list | None:
        record = self._made.get(id(obj))
        return record if record is not None and record[0] is obj else None

    def check_key(self, value: Any) -> None:
        """Refuse keys that are no name or number, and keys made to
        collide (:data:`MAX_SHARED_HASH`)."""
        _check_key(value)
        if type(value) in _SALTED_HASH:
            return
        digest = hash(value)  # flat: _check_key allows nothing deeper
        same = self._keys_by_hash.setdefault(digest, [])
        if value in same:  # at most MAX_SHARED_HASH comparisons
            return
        if len(same) >= MAX_SHARED_HASH:
            raise refuse(f'more than {MAX_SHARED_HASH} different dict keys '
                         f'or set items with one hash ({digest}); such keys '
                         f'are made to slow the load down, not by '
                         f'scikit-learn')
        same.append(value)

    def new_instance(self, token: Global) -> Any:
        cls = token.target
        return object.__new__(cls)

    def ready_dtype(self, value: Any) -> Any:
        # Lazy: numpy stays off the client, which imports storage.
        import numpy as np
        record = self._record(value)
        if not isinstance(value, np.dtype) or record is None:
            raise refuse('an array or scalar needs a dtype made by this '
                         'pickle')
        record[1] = _BUILT  # in use: its state may no longer change
        return value

    def is_bit_generator(self, value: Any) -> bool:
        return (self._record(value) is not None
                and type(value).__name__ in allow.BIT_GENERATORS
                and allow.BIT_GENERATORS[type(value).__name__]
                == type(value).__module__)

    # --- globals -----------------------------------------------------------

    def find_class(self, module: str, name: str) -> Global:
        asked = f'{module}.{name}'
        module, name = _modern_name(module, name)
        entry = allow.entries().get((module, name))
        if entry is None:
            raise UnsafePickleError(
                f'{self.where} refers to {_name_of_global(asked, module)}, which is '
                f'not allowed in '
                f'a classifier pickle; it was refused without being '
                f'imported or run. Only load classifiers from sources you '
                f'trust.')
        try:
            target = entry.resolve()
        except (ImportError, AttributeError) as e:
            raise ClassifierLoadError(
                f'{self.where} refers to {asked!r}, which this scikit-learn '
                f'/ numpy does not have ({e}).') from e
        return Global(module, name, entry.kind, target)

    def load_global(self) -> None:
        module = self.readline()[:-1].decode('utf-8')
        name = self.readline()[:-1].decode('utf-8')
        self.append(self.find_class(module, name))
    dispatch[pickle.GLOBAL[0]] = load_global

    # --- calls ---------------------------------------------------------------

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if type(func) is not Global or type(args) is not tuple:
            raise refuse('REDUCE may only call an allowed global with a '
                         'tuple of arguments')
        if func.kind == allow.CALL:
            made = allow.entries()[func.module, func.name].check(args, self)
        elif func.kind == allow.LOSS:
            if len(args) > 1 or not all(type(a) in (int, float)
                                        for a in args):
                raise refuse(f'{func!r} takes at most one number')
            made = func.target(*args)
        else:
            raise refuse(f'{func!r} may not be called by a classifier '
                         f'pickle')
        stack[-1] = self._remember(made)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new_object(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if type(cls) is not Global or cls.kind != allow.INSTANCE:
            raise refuse('NEWOBJ may only make an instance of an allowed '
                         'class')
        if args != () or type(args) is not tuple or kwargs not in (None, {}):
            raise refuse(f'{cls!r} is made empty, without arguments')
        return self._remember(self.new_instance(cls))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    # --- BUILD ---------------------------------------------------------------

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        record = self._record(inst)
        if record is None:
            raise refuse(f'BUILD on a {_kind(inst)} that this pickle did '
                         f'not make (only new objects may be filled)')
        if record[1] != _FRESH:
            raise refuse(f'BUILD twice on the same {type(inst).__name__}')
        record[1] = _BUILT
        _build(self, inst, state)
    dispatch[pickle.BUILD[0]] = load_build

    # --- containers ----------------------------------------------------------

    def load_append(self) -> None:
        value = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not list:
            raise refuse(f'APPEND to a {_kind(target)}, not a list')
        self.charge(1)
        target.append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not list:
            raise refuse(f'APPENDS to a {_kind(target)}, not a list')
        self.charge(len(items))
        target.extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self.stack[-1]
        _check_dict(target)
        self.check_key(key)
        self.charge(1)
        target[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        _check_dict(target)
        if len(items) % 2:
            raise pickle.UnpicklingError('SETITEMS needs key, value pairs')
        self.charge(len(items))
        for i in range(0, len(items), 2):
            self.check_key(items[i])
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise refuse(f'ADDITEMS to a {_kind(target)}, not a set')
        self.charge(len(items))
        for item in items:
            self.check_key(item)
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError('DICT needs key, value pairs')
        for key in items[::2]:
            self.check_key(key)
        self.append({items[i]: items[i + 1]
                     for i in range(0, len(items), 2)})
    dispatch[pickle.DICT[0]] = load_dict

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            self.check_key(item)
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_bytearray8(self) -> None:
        # pickle allocates the bytearray before reading it: check the
        # length against what the input still holds first.
        size, = struct.unpack('<Q', self.read(8))
        if size > self._size:
            raise pickle.UnpicklingError('BYTEARRAY8 is longer than the '
                                         'pickle')
        data = bytearray(size)
        self.readinto(data)
        self.append(data)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_mark(self) -> None:
        if len(self.metastack) >= MAX_MARKS:
            raise refuse(f'more than {MAX_MARKS} nested marks')
        super().load_mark()
    dispatch[pickle.MARK[0]] = load_mark

    for _name in ('INST', 'OBJ', 'EXT1', 'EXT2', 'EXT4', 'PERSID',
                  'BINPERSID', 'NEXT_BUFFER', 'READONLY_BUFFER'):
        dispatch[getattr(pickle, _name)[0]] = _refused(_name)
    del _name

    def load(self) -> Any:
        """The unpickled object. Whatever the bytes hold, failures are
        ClassifierLoadError (UnsafePickleError when the pickle asks for
        something forbidden)."""
        try:
            return self._run()
        except UnsafePickleError as e:
            if str(e).startswith(self.where):
                raise
            raise UnsafePickleError(
                f'{self.where} was refused: {e}. A classifier pickle may '
                f'only make scikit-learn classifiers and their numpy parts; '
                f'only load classifiers from sources you trust.') from e
        except ClassifierLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any failure
            raise unreadable(self.where, e, self._reader.position()) from e

    def _run(self) -> Any:
        """Run the pickle, one bounded step per opcode."""
        self._unframer = pickle._Unframer(self._file_read,
                                          self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError('pickle data ended before STOP')
                self.charge(1)
                handler = dispatch.get(key[0])
                if handler is None:
                    raise pickle.UnpicklingError(
                        f'invalid load key {key!r}')
                handler(self)
        except pickle._Stop as stop:
            return stop.value


# --- BUILD per type -----------------------------------------------------------


def _build(loader: ClassifierUnpickler, inst: Any, state: Any) -> None:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if isinstance(inst, np.dtype):
        _build_dtype(inst, state)
    elif type(inst) is np.ndarray:
        _build_array(loader, inst, state)
    elif type(inst) is np.random.RandomState:
        _build_random_state(inst, state)
    elif type(inst).__name__ in allow.BIT_GENERATORS:
        _build_bit_generator(loader, inst, state)
    elif type(inst) is np.random.bit_generator.SeedSequence:
        _build_seed_sequence(loader, inst, state)
    elif _is_instance_class(type(inst)):
        _build_instance(inst, state)
    else:
        raise refuse(f'BUILD is not allowed on a {_kind(inst)}')


def _build_dtype(dtype: Any, state: Any) -> None:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    base = np.dtype(dtype.str)
    canonical = {base.__reduce__()[2]}
    for order in '<>':
        canonical.add(base.newbyteorder(order).__reduce__()[2])
    if type(state) is not tuple or not all(
            type(v) in _KEY_TYPES for v in state) or state not in canonical:
        raise refuse(f'a {dtype.str} dtype state that numpy does not write '
                     f'for it')
    type(dtype).__setstate__(dtype, state)


def _build_array(loader: ClassifierUnpickler, array: Any, state: Any
                 ) -> None:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    if type(state) is not tuple or len(state) not in (4, 5):
        raise refuse('an array state must be numpy\'s 4- or 5-tuple')
    version, (shape, dtype, fortran, data) = (
        (state[0], state[1:]) if len(state) == 5 else (0, state))
    if version not in (0, 1) or fortran not in (True, False):
        raise refuse('an array state with an unknown version or order')
    shape = allow.check_shape(shape)
    dtype = loader.ready_dtype(dtype)
    allow.check_array_size(shape, dtype)
    count = allow._product(shape)
    if dtype.hasobject:
        if type(data) is not list or len(data) != count:
            raise refuse('object array data must be a list of its size')
        # Labels are names and numbers. numpy frees nested object arrays
        # recursively in C, so a deep nest would crash the process.
        if not all(type(v) in _KEY_TYPES or isinstance(v, np.generic)
                   for v in data):
            raise refuse('object array items must be names or numbers')
    elif allow._raw_length(data) != count * dtype.itemsize:
        raise refuse('array data does not match its shape and dtype')
    np.ndarray.__setstate__(array, state)


def _build_random_state(rs: Any, state: Any) -> None:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    ok = (type(state) is dict and set(state) <= {
        'bit_generator', 'state', 'has_gauss', 'gauss'}
        and type(state.get('bit_generator')) is str) or (
        type(state) is tuple and len(state) == 5
        and type(state[0]) is str)
    if not ok:
        raise refuse('a RandomState state must be numpy\'s dict or tuple')
    np.random.RandomState.__setstate__(rs, state)


def _build_bit_generator(loader: ClassifierUnpickler, bitgen: Any,
                         state: Any) -> None:
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    seed_seq = None
    if type(state) is tuple and len(state) == 2:
        state, seed_seq = state
    if type(state) is not dict or type(state.get('bit_generator')) is not str:
        raise refuse('a bit generator state must be numpy\'s dict')
    if seed_seq is not None and (
            type(seed_seq) is not np.random.bit_generator.SeedSequence
            or loader._record(seed_seq) is None):
        raise refuse('a bit generator may only hold a SeedSequence made by '
                     'this pickle')
    type(bitgen).__setstate__(bitgen, state if seed_seq is None
                              else (state, seed_seq))


def _build_seed_sequence(loader: ClassifierUnpickler, seq: Any,
                         state: Any) -> None:
    # (entropy, n_children_spawned, pool, pool_size, spawn_key); the pool
    # must be what pool_size says, or generate_state reads out of bounds.
    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np
    ok = type(state) is tuple and len(state) == 5
    if ok:
        entropy, children, pool, size, spawn_key = state
        ok = ((entropy is None or type(entropy) is int or (
            type(entropy) is tuple and all(type(e) is int for e in entropy)))
            and type(children) is int and 0 <= children < 2 ** 32
            and type(size) is int and 1 <= size <= 1024
            and type(pool) is np.ndarray and loader._record(pool) is not None
            and pool.dtype == np.uint32 and pool.shape == (size,)
            and pool.flags.c_contiguous
            and type(spawn_key) is tuple
            and all(type(k) is int and k >= 0 for k in spawn_key))
    if not ok:
        raise refuse('a SeedSequence state must be numpy\'s (entropy, '
                     'children, pool, pool_size, spawn_key)')
    np.random.bit_generator.SeedSequence.__setstate__(seq, state)


def _is_data_descriptor(attr: Any) -> bool:
    return hasattr(type(attr), '__set__') or hasattr(type(attr), '__delete__')


def _shadows_method(cls: type, key: str) -> bool:
    attr = inspect.getattr_static(cls, key, _MISSING)
    if attr is _MISSING or _is_data_descriptor(attr):
        return False
    return callable(attr) or hasattr(type(attr), '__get__')


def _build_instance(inst: Any, state: Any) -> None:
    cls = type(inst)
    if type(state) is not dict:
        raise refuse(f'a {cls.__name__} state must be a dict of attributes')
    for key in state:
        if type(key) is not str or key.startswith('__') \
                or _shadows_method(cls, key):
            raise refuse(f'a {cls.__name__} state may not set {key!r}: it '
                         f'would hide a method of the class')
    version = state.get('_sklearn_version')
    if version is not None and type(version) is not str:
        raise refuse('_sklearn_version must be a string')
    setstate = inspect.getattr_static(cls, '__setstate__', None)
    if setstate is not None:
        cls.__setstate__(inst, state)
    else:
        inst.__dict__.update(state)


# --- the finished object ----------------------------------------------------


_KEY_TYPES = (type(None), bool, int, float, complex, str, bytes)
_SALTED_HASH = (str, bytes)


def _check_key(key: Any) -> None:
    # Hashing a deeply nested tuple recurses in C without a guard and
    # crashes the interpreter; classifier dict keys and set items are
    # names and numbers.
    if type(key) in _KEY_TYPES or (type(key) is tuple and len(key) <= 64
                                   and all(type(k) in _KEY_TYPES
                                           for k in key)):
        return
    raise refuse(f'a dict key or set item that is a {_kind(key)}; only '
                 f'names, numbers and flat tuples of them are allowed')


def _check_dict(target: Any) -> None:
    if type(target) not in (dict, OrderedDict):
        raise refuse(f'SETITEM on a {_kind(target)}, not a dict')


def _kind(obj: Any) -> str:
    if type(obj) is Global:
        return f'global {obj!r}'
    if isinstance(obj, type):
        return f'class {obj.__module__}.{obj.__qualname__}'
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return 'function'
    if isinstance(obj, types.ModuleType):
        return 'module'
    return type(obj).__name__


def _is_instance_class(cls: type) -> bool:
    names = allow.INSTANCE_CLASSES.get(cls.__module__, ())
    return cls.__qualname__ in names


def _is_loss_class(cls: type) -> bool:
    return cls.__qualname__ in allow.LOSS_CLASSES.get(cls.__module__, ())


_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray)


def check_graph(root: Any, where: str) -> None:
    """Refuse a loaded object that reaches anything but allowed types, or
    nests deeper than MAX_DEPTH (walked without recursion)."""

    # Lazy: numpy stays off the client, which imports storage.
    import numpy as np

    seen: set[int] = set()
    todo = [(root, 0)]
    steps = 0
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        steps += 1
        if depth > MAX_DEPTH or steps > MAX_STEPS:
            raise refuse(f'{where}: the classifier nests deeper than '
                         f'{MAX_DEPTH} levels or holds over {MAX_STEPS} '
                         f'objects')
        kind = type(obj)
        children: Any = ()
        if kind in _PLAIN or isinstance(obj, np.dtype):
            pass
        elif kind in (list, tuple, set, frozenset):
            children = obj
        elif kind in (dict, OrderedDict):
            children = [*obj.keys(), *obj.values()]
        elif kind is np.ndarray:
            if obj.dtype.hasobject:
                children = list(obj.flat)
        elif isinstance(obj, np.generic) and kind.__module__ == 'numpy':
            pass
        elif kind is np.random.RandomState or (
                kind.__name__ in allow.BIT_GENERATORS) or (
                kind is np.random.bit_generator.SeedSequence):
            pass
        elif _is_instance_class(kind):
            state = obj.__dict__
            if not all(type(k) is str for k in state):
                raise refuse(f'{where}: a {kind.__name__} with a non-string '
                             f'attribute name')
            children = list(state.values())
        elif _is_loss_class(kind):
            pass
        else:
            raise refuse(f'{where}: the classifier holds a {_kind(obj)}, '
                         f'which a classifier pickle may not contain')
        todo.extend((child, depth + 1) for child in children)


def _name_of_global(asked: str, module: str) -> str:
    """A refused global, quoted only when its top-level module is installed
    here: a name is what an operator needs (os.system), but a made-up one is
    just bytes of the file, which error texts never echo."""
    top = module.partition('.')[0]    # after Python 2 renames
    if top.isidentifier() and len(asked) <= 200:
        try:
            installed = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            installed = False
        if installed:
            return repr(asked)
    return 'a global of a module that is not installed here'


def _modern_name(module: str, name: str) -> tuple[str, str]:
    # Python 2 names (__builtin__, copy_reg) first, as pickle would.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return allow.RENAMED_MODULES.get(module, module), name


def restricted_loads(data: bytes, where: str = 'pickle') -> Any:
    """The object pickled in ``data``, made only of allowed types.

    Raises UnsafePickleError for anything outside the allowlist and
    ClassifierLoadError for any other unreadable input.
    """
    obj = ClassifierUnpickler(data, where).load()
    check_graph(obj, where)
    return obj
