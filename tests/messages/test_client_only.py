"""Every message builds, serializes and deserializes with only the
``client`` extra installed: no torch, scikit-learn, numpy, Pillow or boto3.

Given a virtualenv holding just the client extra (celery, kombu, redis),
cached under ~/.cache/spacer_worker/ and keyed by that extra, and our
package installed with --no-deps,
when a script builds the whole compatibility table there and round-trips it
through JSON,
then it writes the same JSON as the full environment and none of the heavy
modules is installed or imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from spacer_worker import data_classes, extractors, messages, train_classifier
from tests.messages.cases import build_cases

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / '.cache' / 'spacer_worker'
HEAVY = ['torch', 'sklearn', 'numpy', 'PIL', 'boto3', 'botocore', 'scipy']

SCRIPT = r'''
import importlib.util, json, sys
import spacer_worker
assert spacer_worker.__file__.startswith(sys.argv[1]), spacer_worker.__file__

from spacer_worker import data_classes as D, extractors as E
from spacer_worker import messages as M, train_classifier as T

ns = {}
exec(open(sys.argv[2]).read(), ns)
out = {}
for case_id, name, obj in ns['build_cases'](M, D, E, T):
    cls = next(getattr(m, name) for m in (M, D, E, T) if hasattr(m, name))
    text = json.dumps(obj.serialize())
    back = cls.deserialize(json.loads(text))
    assert back == obj, case_id
    assert json.dumps(back.serialize()) == text, case_id
    out[case_id] = text

# Features from plain lists, and a dummy extraction, without numpy.
f = D.ImageFeatures.from_arrays([1, 2], [3, 4], [[0.5, 1.0], [1.5, 2.0]])
assert f[(2, 4)] == [1.5, 2.0] and f.feature_dim == 2
assert f.point_features[0].data == [0.5, 1.0]
feats, _ = E.DummyExtractor(feature_dim=5)(None, [(1, 1)])
assert feats.npoints == 1 and feats.feature_dim == 5

import celery, kombu, redis  # the client extra is there
heavy = sys.argv[3].split(',')
out['_imported'] = sorted(m for m in heavy if m in sys.modules)
out['_installed'] = sorted(m for m in heavy if importlib.util.find_spec(m))
print(json.dumps(out))
'''


def client_requirements() -> list[str]:
    with open(REPO / 'pyproject.toml', 'rb') as f:
        return tomllib.load(f)['project']['optional-dependencies']['client']


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, cmd))} failed:\n{proc.stdout}\n'
                    f'{proc.stderr}')
    return proc


@pytest.fixture(scope='session')
def client_venv() -> Path:
    """A cached venv with only the client extra; rebuilt when it changes."""
    requirements = client_requirements()
    key = hashlib.sha256(json.dumps(
        [list(sys.version_info[:2]), requirements]).encode()).hexdigest()[:12]
    venv = CACHE / f'client-only-{key}'
    if (venv / '.complete').exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f'.client-only-{key}.{os.getpid()}'
    shutil.rmtree(building, ignore_errors=True)
    _run([sys.executable, '-m', 'venv', str(building)])
    # Built aside, then renamed into place: only bin/python is used, and
    # it survives the rename (pip's script shebangs would not).
    _run([str(building / 'bin' / 'python'), '-m', 'pip', 'install', '-q',
          *requirements], timeout=900)
    (building / '.complete').write_text('\n'.join(requirements) + '\n')
    try:
        building.rename(venv)
    except OSError:  # another run finished first: use theirs
        shutil.rmtree(building, ignore_errors=True)
    return venv


@pytest.fixture
def package_dir(tmp_path) -> Path:
    """Our package installed with --no-deps into a directory of its own."""
    src = tmp_path / 'src'
    shutil.copytree(REPO / 'spacer_worker', src / 'spacer_worker',
                    ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('pyproject.toml', 'README.md'):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    target = tmp_path / 'site'
    _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
          '--no-build-isolation', '--target', str(target), str(src)],
         timeout=300)
    return target


@pytest.mark.slow
def test_messages_work_with_only_the_client_extra(client_venv, package_dir,
                                                  tmp_path):
    script = tmp_path / 'client_check.py'
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'PYTHON'))}
    env['PYTHONPATH'] = str(package_dir)
    env['PYTHONNOUSERSITE'] = '1'
    env['SPACER_SECRETS_PATH'] = str(tmp_path / 'no-secrets.json')

    proc = _run([str(client_venv / 'bin' / 'python'), str(script),
                 str(package_dir), str(Path(__file__).parent / 'cases.py'),
                 ','.join(HEAVY)], cwd=tmp_path, env=env, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result.pop('_installed') == []
    assert result.pop('_imported') == []
    full_env = {case_id: json.dumps(obj.serialize()) for case_id, _, obj in
                build_cases(messages, data_classes, extractors,
                            train_classifier)}
    assert result == full_env
