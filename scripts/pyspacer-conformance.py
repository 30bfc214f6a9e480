#!/usr/bin/env python3
"""PySpacer's own test suite, run against spacer_worker.

Takes a PySpacer checkout (a folder holding spacer/tests, or a git
directory and a revision), runs its tests twice and prints both counts:

1. unchanged, on PySpacer itself, in the reference venv
   (scripts/reference-venv.sh);
2. with imports and mock targets rewritten from ``spacer`` to
   ``spacer_worker``, on this checkout, in this Python.

Then it lists every test that passes on PySpacer and fails on ours, and
the share of PySpacer's passing tests that pass here. Not part of CI (a
PySpacer checkout needs the network); docs/pyspacer-conformance.md lists
the tests still failing and why.

    python3 scripts/pyspacer-conformance.py /path/to/pyspacer
    python3 scripts/pyspacer-conformance.py --git /path/to/pyspacer.git --rev 0.14.0

PySpacer's extractor tests import torchvision, which does not install
beside our torch pin: --conformance-venv runs ours in a venv with our
worker extra and the reference venv's torch and torchvision (built once,
cached); --python names another interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get(
    'SPACER_REFERENCE_VENV',
    Path.home() / '.cache' / 'spacer_worker' / 'pyspacer-0.14.0'))
PACKAGE = 'pyspacer_tests'      # where the rewritten suite lives
CONFORMANCE_VENV = Path.home() / '.cache' / 'spacer_worker' / 'conformance'


def conformance_python() -> str:
    """A venv with our worker extra whose torch and torchvision (and the
    rest of PySpacer's stack) come from the reference venv, through a
    .pth line after the venv's own site-packages."""
    python = CONFORMANCE_VENV / 'bin' / 'python'
    if (CONFORMANCE_VENV / '.complete').exists():
        return str(python)
    shutil.rmtree(CONFORMANCE_VENV, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'venv', str(CONFORMANCE_VENV)],
                   check=True)

    def site(py: Path) -> str:
        return subprocess.run(
            [str(py), '-c', 'import sysconfig; '
             'print(sysconfig.get_paths()["purelib"])'],
            check=True, capture_output=True, text=True).stdout.strip()

    Path(site(python), 'zz_pyspacer_stack.pth').write_text(
        site(REFERENCE / 'bin' / 'python') + '\n')
    subprocess.run([str(python), '-m', 'pip', 'install', '-q',
                    f'{REPO}[worker]', 'pytest', 'pytest-timeout'],
                   check=True)
    # The checkout is imported through PYTHONPATH, not this copy.
    subprocess.run([str(python), '-m', 'pip', 'uninstall', '-q', '-y',
                    'spacer_worker'], check=True)
    (CONFORMANCE_VENV / '.complete').touch()
    return str(python)


def checkout(args: argparse.Namespace, into: Path) -> Path:
    """A folder holding spacer/ (and its tests) at the wanted revision."""
    if args.git:
        into.mkdir(parents=True)
        archive = subprocess.run(
            ['git', f'--git-dir={args.git}', 'archive', args.rev, 'spacer'],
            check=True, capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', str(into)], input=archive,
                       check=True)
        return into
    return Path(args.source)


def rewrite(text: str) -> str:
    """spacer.tests.X -> pyspacer_tests.X; spacer.X -> spacer_worker.X,
    in imports and in mock targets ('spacer.tasks.foo')."""
    text = re.sub(r'\bspacer\.tests\b', PACKAGE, text)
    text = re.sub(r'(?<![\w.])spacer(?=\.\w)', 'spacer_worker', text)
    text = re.sub(r'^(\s*)from spacer import', r'\1from spacer_worker import',
                  text, flags=re.M)
    text = re.sub(r'^(\s*)import spacer$', r'\1import spacer_worker as spacer',
                  text, flags=re.M)
    # Class paths on the wire stay PySpacer's (a trainer's or extractor's
    # class_path, an error's last line): those are what is compared.
    return re.sub(r'spacer_worker(\.(?:train_classifier\.\w*Trainer|'
                  r'extractors\.\w+\.\w+Extractor|exceptions\.\w+Error)[\'"])',
                  r'spacer\1', text)


def rewritten_suite(source: Path, into: Path) -> Path:
    target = into / PACKAGE
    shutil.copytree(source / 'spacer' / 'tests', target)
    for path in target.rglob('*.py'):
        path.write_text(rewrite(path.read_text()))
    return into


def run(python: str, cwd: Path, tests: str, report: Path,
        env: dict[str, str]) -> dict[str, str]:
    """{test id: outcome} from a pytest run (outcome: passed, failed,
    error, skipped)."""
    subprocess.run(
        [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         '-o', 'addopts=', '--timeout=300', f'--junitxml={report}', tests],
        cwd=str(cwd), env=env, capture_output=True, text=True)
    outcomes = {}
    for case in ET.parse(report).getroot().iter('testcase'):
        name = f"{case.get('classname')}.{case.get('name')}"
        name = name.replace(PACKAGE + '.', '').replace('spacer.tests.', '')
        kinds = {child.tag for child in case}
        outcomes[name] = ('failed' if 'failure' in kinds else
                          'error' if 'error' in kinds else
                          'skipped' if 'skipped' in kinds else 'passed')
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', nargs='?', help='a PySpacer checkout')
    parser.add_argument('--git', help='a PySpacer git directory instead')
    parser.add_argument('--rev', default='HEAD', help='with --git')
    parser.add_argument('--json', help='write the outcomes here')
    parser.add_argument('--python', default=sys.executable,
                        help='the interpreter that runs ours')
    parser.add_argument('--conformance-venv', action='store_true',
                        help='run ours in a venv that has torchvision')
    args = parser.parse_args()
    if not (args.source or args.git):
        parser.error('give a PySpacer checkout or --git')
    if not (REFERENCE / 'bin' / 'python').exists():
        sys.exit(f'No PySpacer reference venv at {REFERENCE}: run '
                 f'bash scripts/reference-venv.sh first.')

    reference_python = str(REFERENCE / 'bin' / 'python')
    if subprocess.run([reference_python, '-c', 'import pytest, pytest_timeout'],
                      capture_output=True).returncode:
        subprocess.run([reference_python, '-m', 'pip', 'install', '-q',
                        'pytest', 'pytest-timeout'], check=True)

    with tempfile.TemporaryDirectory(prefix='pyspacer-conformance-') as tmp:
        work = Path(tmp)
        source = checkout(args, work / 'pyspacer')
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('SPACER_', 'PYTEST_'))}
        print(f'PySpacer suite on PySpacer ({REFERENCE})...', flush=True)
        theirs = run(reference_python, source,
                     'spacer/tests', work / 'theirs.xml',
                     {**env, 'PYTHONPATH': str(source)})
        ours_dir = rewritten_suite(source, work / 'ours')
        print('PySpacer suite on spacer_worker...', flush=True)
        python = conformance_python() if args.conformance_venv \
            else args.python
        ours = run(python, ours_dir, PACKAGE, work / 'ours.xml',
                   {**env, 'PYTHONPATH': f'{ours_dir}{os.pathsep}{REPO}',
                    'SPACER_LOCAL_FIXTURE_DIR': str(ours_dir / PACKAGE / 'fixtures')})

    passing = sorted(t for t, o in theirs.items() if o == 'passed')
    both = [t for t in passing if ours.get(t) == 'passed']
    missing = [t for t in passing if ours.get(t) != 'passed']
    print(f'\nPySpacer: {len(passing)} passed of {len(theirs)} collected')
    print(f'spacer_worker: {sum(o == "passed" for o in ours.values())} passed '
          f'of {len(ours)} collected')
    print(f'Of the {len(passing)} passing on PySpacer, {len(both)} pass here '
          f'({100 * len(both) / max(len(passing), 1):.1f}%). Not passing here:')
    for test in missing:
        print(f'  {ours.get(test, "not collected"):>13}  {test}')
    if args.json:
        Path(args.json).write_text(json.dumps(
            {'pyspacer': theirs, 'spacer_worker': ours}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
