"""compose.yaml is valid for every profile, as docker-compose reads it.

Docker cannot run on our machines; Debian's docker-compose (v1.29, the
Compose-spec schema) still validates the file, interpolation and profiles.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.conftest import COMPOSE_FILE, REPO, require_tool

# Which services each profile runs is checked in test_consistency.py
# (docker-compose 1.29 lists every service whatever the profile).
PROFILES = [(), ('gpu',), ('cpu',), ('gpu', 'cpu'), ('monitoring',),
            ('gpu', 'cpu', 'monitoring')]


def docker_compose(*args: str) -> subprocess.CompletedProcess:
    binary = require_tool('docker-compose',
                          'apt-get install docker-compose; scripts/test.sh '
                          'does it')
    # Only the defaults written in compose.yaml: no variable from the
    # developer's shell (CPU_IMAGE=..., COMPOSE_PROFILES=...) may leak in.
    env = {k: v for k, v in os.environ.items()
           if k in ('PATH', 'HOME', 'LANG', 'LC_ALL')}
    return subprocess.run(
        [binary, '--project-directory', str(REPO), '-f', str(COMPOSE_FILE),
         *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize('profiles', PROFILES,
                         ids=lambda p: '+'.join(p) or 'default')
def test_compose_file_is_valid_for_every_profile(profiles):
    flags = [arg for p in profiles for arg in ('--profile', p)]

    checked = docker_compose(*flags, 'config', '-q')
    assert checked.returncode == 0, checked.stderr
