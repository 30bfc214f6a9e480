"""Run code in the PySpacer 0.14.0 reference environment (a side venv).

PySpacer's pins (torch 2.14, torchvision) conflict with ours, so it lives in
its own virtualenv, built by ``scripts/reference-venv.sh``. Tests exchange
data with it through JSON on stdin/stdout and files in tmp dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

DEFAULT_VENV = Path.home() / '.cache' / 'spacer_worker' / 'pyspacer-0.14.0'


def reference_python() -> Path | None:
    explicit = os.environ.get('SPACER_REFERENCE_PYTHON')
    if explicit:
        return Path(explicit)
    candidate = DEFAULT_VENV / 'bin' / 'python'
    return candidate if candidate.exists() else None


def run_reference(code: str, payload: Any = None, timeout: float = 600,
                  env: dict[str, str] | None = None) -> Any:
    """Run ``code`` under PySpacer; it reads ``payload`` from the variable
    ``PAYLOAD`` and must assign its JSON-able answer to ``RESULT``."""
    python = reference_python()
    if python is None:
        raise RuntimeError('PySpacer reference venv missing: run '
                           'scripts/reference-venv.sh')
    program = (
        'import json, sys\n'
        'PAYLOAD = json.loads(sys.stdin.read())\n'
        + textwrap.dedent(code)
        + '\nsys.stdout.write("\\n@@RESULT@@" + json.dumps(RESULT))\n'
    )
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith('SPACER_')}
    run_env.update(env or {})
    proc = subprocess.run(
        [str(python), '-c', program], input=json.dumps(payload),
        capture_output=True, text=True, timeout=timeout, env=run_env,
        cwd='/')
    if proc.returncode != 0:
        raise RuntimeError(f'PySpacer reference run failed:\n{proc.stderr}')
    return json.loads(proc.stdout.rsplit('@@RESULT@@', 1)[1])
