"""A real Docker Engine for tests/deploy/test_compose_up.py: is one there,
which compose command to use, and the images built without pulling any.

Nothing here pulls an image: the base image is debootstrapped from Debian
packages (tests/deploy/base-image.sh), every other image is built on it
with ``--network host`` (pip reaches the index as the host does). Tags are
named after the content that made them, so a second run on one machine
reuses them and a changed input builds afresh.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests.deploy.conftest import REPO

HERE = Path(__file__).resolve().parent
BASE_SCRIPT = HERE / 'base-image.sh'
S3_DOCKERFILE = HERE / 'standins' / 's3.Dockerfile'


def engine_missing() -> str | None:
    """Why no Docker Engine can run containers here, or None."""
    if shutil.which('docker') is None:
        return ('no docker client: apt-get install docker.io (scripts/test.sh '
                'does, as root)')
    run = subprocess.run(['docker', 'info', '--format', '{{.ServerVersion}}'],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        return ('no Docker Engine answers (docker info: '
                f'{run.stderr.strip().splitlines()[-1:]}); scripts/test.sh '
                'starts dockerd when it runs as root')
    if shutil.which('debootstrap') is None:
        return ('debootstrap is missing (apt-get install debootstrap): the '
                'test builds its base image from Debian packages')
    return None


def compose_command() -> list[str]:
    """The documented ``docker compose`` (v2 plugin) where it is installed,
    else Debian 12's ``docker-compose`` (v1), which takes the same
    arguments for every command the docs show."""
    run = subprocess.run(['docker', 'compose', 'version'],
                         capture_output=True, text=True)
    if run.returncode == 0:
        return ['docker', 'compose']
    if shutil.which('docker-compose'):
        return ['docker-compose']
    raise RuntimeError('neither `docker compose` nor `docker-compose` is '
                       'installed (apt-get install docker-compose)')


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def run(args: list[str], timeout: float = 1200, **kwargs) -> str:
    """Run a command; on failure raise with its output's tail."""
    done = subprocess.run(args, capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f'{" ".join(args[:6])}... exited '
                           f'{done.returncode}:\n{tail}')
    return done.stdout


def base_image() -> str:
    """Debian bookworm + Python 3.11 venv + redis-server, built once."""
    tag = f'spacer-test-base:{_digest(BASE_SCRIPT)}'
    run(['bash', str(BASE_SCRIPT), tag], timeout=1200)
    return tag


def s3_image(base: str) -> str:
    """moto's S3 server on the base image."""
    tag = f'spacer-test-s3:{_digest(S3_DOCKERFILE, BASE_SCRIPT)}'
    if not _exists(tag):
        run(['docker', 'build', '--network', 'host', '-q', '-t', tag,
             '--build-arg', f'BASE_IMAGE={base}', '-f', str(S3_DOCKERFILE),
             str(S3_DOCKERFILE.parent)])
    return tag


def cpu_image(base: str, tag: str, label: str = '') -> str:
    """docker/Dockerfile's CPU image, as its header says to build it (on
    our base image). A ``label`` makes a distinct image of the same code:
    the next version of a rolling upgrade."""
    args = ['docker', 'build', '--network', 'host', '-q', '-t', tag,
            '--build-arg', f'BASE_IMAGE={base}', '-f',
            str(REPO / 'docker' / 'Dockerfile')]
    if label:
        args += ['--label', f'spacer-test-version={label}']
    run(args + [str(REPO)], timeout=1800)
    return tag


def _exists(tag: str) -> bool:
    return subprocess.run(['docker', 'image', 'inspect', tag],
                          capture_output=True).returncode == 0
