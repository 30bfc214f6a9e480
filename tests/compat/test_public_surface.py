"""Every public name of PySpacer 0.14.0 exists under ``spacer_worker.``
with a compatible signature, and so does every public method of its
classes.

Given the list of PySpacer's public modules, names and call signatures
(read in the reference venv by walking its package), when each is looked
up at the same path under spacer_worker, then none is missing, and every
parameter PySpacer's callers may pass is accepted here, by position and by
name, and is optional here when it is optional there.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from tests.reference import run_reference

# Walks PySpacer (in its venv) once: 'names' is module -> name -> [kind,
# params] (a module that cannot be imported there, mailman needs `fire`,
# is read with ast); 'methods' is "module:Class.method" -> params, or
# 'property', for the classes each module defines.
WALK = r'''
import ast, importlib, inspect, pkgutil, spacer

def params(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [[p.name, p.kind.name, p.default is not p.empty]
            for p in sig.parameters.values()]

def from_source(name):
    spec = importlib.util.find_spec(name)
    tree = ast.parse(open(spec.origin).read())
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and \
                not node.name.startswith('_'):
            found[node.name] = ['function' if isinstance(
                node, ast.FunctionDef) else 'class', None]
    return found

def methods(modname, name, cls):
    for attr, member in vars(cls).items():
        if attr.startswith('_'):
            continue
        key = f'{modname}:{name}.{attr}'
        if isinstance(member, property):
            METHODS[key] = 'property'
        elif isinstance(member, (staticmethod, classmethod)):
            METHODS[key] = params(getattr(cls, attr))
        elif inspect.isfunction(member):
            METHODS[key] = params(member)

NAMES, METHODS = {}, {}
RESULT = {'names': NAMES, 'methods': METHODS}
names = ['spacer'] + [m.name for m in pkgutil.walk_packages(
    spacer.__path__, 'spacer.') if '.tests' not in m.name]
for modname in names:
    try:
        module = importlib.import_module(modname)
    except ImportError:
        NAMES[modname] = from_source(modname)
        continue
    entries = {}
    for name, obj in vars(module).items():
        if name.startswith('_') or inspect.ismodule(obj):
            continue
        origin = getattr(obj, '__module__', None) or ''
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and \
                not origin.startswith('spacer'):
            continue  # a third-party name PySpacer merely imports
        kind = 'class' if inspect.isclass(obj) else \
            'function' if callable(obj) else 'value'
        entries[name] = [kind, params(obj) if callable(obj) else None]
        if inspect.isclass(obj) and obj.__module__ == modname:
            methods(modname, name, obj)  # a class defined here, not re-exported
    NAMES[modname] = entries
'''

# Not public API: annotations/logger/typing helpers every module has.
INCIDENTAL = {'annotations', 'logger', 'TypeAlias', 'Type'}
# PySpacer's EfficientNet network code. Ours is a different implementation
# of the same network (spacer_worker.extractors.runtime.network, PySpacer's
# weight files load into it); its building blocks are not re-created under
# PySpacer's names. TorchExtractor, the documented extension point, is.
NETWORK_INTERNALS = {
    'spacer.extractors.efficientnet_utils': '*',
    'spacer.extractors.efficientnet': {
        'relu_fn', 'round_filters', 'round_repeats', 'drop_connect',
        'get_same_padding_conv2d', 'get_model_params', 'efficientnet_params',
        'MBConvBlock', 'EfficientNet'},
}


@pytest.fixture(scope='module')
def pyspacer_walk(pyspacer_reference):
    return run_reference(WALK, None, timeout=300)


@pytest.fixture(scope='module')
def pyspacer_surface(pyspacer_walk):
    return pyspacer_walk['names']


@pytest.fixture(scope='module')
def pyspacer_methods(pyspacer_walk):
    return pyspacer_walk['methods']


def _excluded(module: str, name: str) -> bool:
    skip = NETWORK_INTERNALS.get(module, ())
    return name in INCIDENTAL or skip == '*' or name in skip


def _incompatible(theirs: list, ours: inspect.Signature) -> str | None:
    mine = list(ours.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in mine)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in mine)
    for index, (name, kind, has_default) in enumerate(theirs):
        if kind in ('VAR_POSITIONAL', 'VAR_KEYWORD'):
            if not (var_pos if kind == 'VAR_POSITIONAL' else var_kw):
                return f'no *{name}'
            continue
        if index < len(mine) and mine[index].name == name:
            param = mine[index]
        else:
            by_name = {p.name: p for p in mine}
            param = by_name.get(name)
            if param is None:
                if var_kw and kind == 'KEYWORD_ONLY':
                    continue
                return f'parameter {name!r} missing or moved'
            if kind == 'POSITIONAL_OR_KEYWORD':
                return f'parameter {name!r} is not at position {index}'
        if has_default and param.default is param.empty and \
                param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            return f'parameter {name!r} is optional in PySpacer, required here'
    names = {n for n, *_ in theirs}
    for param in mine:
        if param.name not in names and param.default is param.empty and \
                param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            return f'extra required parameter {param.name!r}'
    return None


def test_every_public_name_exists_with_a_compatible_signature(
        pyspacer_surface):
    missing, incompatible = [], []
    for module_name, entries in sorted(pyspacer_surface.items()):
        ours_name = 'spacer_worker' + module_name[len('spacer'):]
        if NETWORK_INTERNALS.get(module_name) == '*':
            continue
        try:
            module = importlib.import_module(ours_name)
        except ImportError as e:
            missing.append(f'{ours_name} (module: {e})')
            continue
        for name, (_kind, params) in sorted(entries.items()):
            if _excluded(module_name, name):
                continue
            try:
                obj = getattr(module, name)
            except AttributeError:
                missing.append(f'{ours_name}.{name}')
                continue
            if params is None or not callable(obj):
                continue
            try:
                signature = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            problem = _incompatible(params, signature)
            if problem:
                incompatible.append(f'{ours_name}.{name}: {problem}')
    assert not missing, 'missing public names:\n' + '\n'.join(missing)
    assert not incompatible, 'incompatible:\n' + '\n'.join(incompatible)


def test_every_public_method_exists_with_a_compatible_signature(
        pyspacer_methods):
    # Code written against PySpacer calls methods too (storage.load(key),
    # extractor.load_datastream('weights'), DataClass.example()), and by
    # keyword: parameter names count.
    assert len(pyspacer_methods) > 100, 'the walk found too few methods'
    missing, incompatible = [], []
    for key, params in sorted(pyspacer_methods.items()):
        module_name, qualified = key.split(':')
        class_name, method = qualified.split('.')
        if _excluded(module_name, class_name):
            continue
        ours_name = 'spacer_worker' + module_name[len('spacer'):]
        cls = getattr(importlib.import_module(ours_name), class_name)
        if not hasattr(cls, method):
            missing.append(f'{ours_name}.{qualified}')
            continue
        if not isinstance(params, list):
            continue  # a property, or a signature PySpacer's walk could not read
        static = inspect.getattr_static(cls, method)
        bound = isinstance(static, (staticmethod, classmethod))
        try:
            signature = inspect.signature(getattr(cls, method) if bound
                                          else static)
        except (TypeError, ValueError):
            continue
        problem = _incompatible(params, signature)
        if problem:
            incompatible.append(f'{ours_name}.{qualified}: {problem}')
    assert not missing, 'missing public methods:\n' + '\n'.join(missing)
    assert not incompatible, 'incompatible:\n' + '\n'.join(incompatible)


def test_the_walk_sees_what_coralnet_imports(pyspacer_surface):
    # The walk itself must not silently skip modules.
    for module, names in [('spacer.aws', {'get_s3_resource', 'aws_check'}),
                          ('spacer.mailman', {'env_job'}),
                          ('spacer.storage', {'URLStorage'}),
                          ('spacer.config', {'check', 'HAS_CAFFE'})]:
        assert names <= set(pyspacer_surface[module]), module
