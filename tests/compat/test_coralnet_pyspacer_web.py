"""CoralNet as it is today: PySpacer 0.13.0 (or 0.14.0) in its web process,
and one setting changed (SPACER_QUEUE_CHOICE). The Django project builds
every message with ``spacer``'s own classes, in a venv where ``spacer`` is
that release (scripts/pyspacer-web-venv.sh), and real workers run them:
extraction,
training with its ValResults, classification, and every failure CoralNet
sorts by the class path on the last line. Results come back as PySpacer's
own classes, which CoralNet's code reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from spacer_worker.client.jobs import Client
from tests.compat.test_coralnet_loop import EXPECTED
from tests.compat.test_failure_classes import http_root  # noqa: F401
from tests.services import (
    CONTROL_WITH_ADD_CONSUMER,
    REPO,
    django_env,
    run_django,
    wait_for,
)

# Each failure with the class path CoralNet sorts it by, as for our own
# messages.
FAILURES = EXPECTED


@pytest.fixture(scope='module', params=['0.13.0', '0.14.0'])
def pyspacer_web(request) -> tuple[str, str]:
    """(PySpacer release, the python of a web-process venv with it)."""
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'pyspacer-web-venv.sh'),
                           request.param],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        message = (f'PySpacer {request.param} web venv not built:\n'
                   f'{done.stderr[-3000:]}')
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return request.param, os.path.join(done.stdout.strip().splitlines()[-1],
                                       'bin', 'python')


def _collect_until_settled(env, python, names, timeout=120.0):
    """CoralNet's collect loop until every job named is no longer pending;
    the last report, and the result classes of every job collected."""
    classes: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        report = run_django(env, 'collect_jobs', python=python)
        classes.update(report['classes'])
        by_name = {job['name']: job for job in report['sorted'].values()}
        if all(by_name[n]['status'] != 'pending' for n in names):
            return by_name, classes
        assert time.monotonic() < deadline, by_name
        time.sleep(0.5)


def test_coralnet_keeping_pyspacer_changes_one_setting(
        app, broker_url, redis_db, start_worker, tmp_path,
        pyspacer_web, http_root):  # noqa: F811
    release, python = pyspacer_web
    data = tmp_path / 'data'
    data.mkdir()
    start_worker('coralnet', queues='extract,train,classify,extract_high',
                 concurrency=2, env={
                     'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
                     'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path),
                     'SPACER_URL_ALLOWED_HOSTS': '127.0.0.1',
                     # The test opens train_high later by remote control.
                     'SPACER_WORKER_CONTROL_COMMANDS':
                         CONTROL_WITH_ADD_CONSUMER})
    env = django_env(broker_url, tmp_path)   # settings.SPACER, as CoralNet
    version = subprocess.run(
        [python, '-c', 'import importlib.metadata as m, spacer.messages; '
         'print(m.version("pyspacer"), spacer.messages.__file__)'],
        env=env, capture_output=True, text=True, check=True).stdout
    assert version.startswith(release + ' ') and str(REPO) not in version

    run_django(env, 'migrate', '-v', '0', python=python)

    # 1. Extraction: eight images, and each extraction failure.
    jobs = run_django(env, 'pyspacer_jobs', 'extract', str(data),
                      '--http-base', http_root, python=python)
    lost_key = app.backend.get_key_for_task(jobs['lost'][1])
    wait_for(lambda: b'SUCCESS' in (redis_db.get(lost_key) or b''), 60,
             what='the lost job to finish')
    redis_db.delete(lost_key)
    by_name, classes = _collect_until_settled(env, python, jobs)
    extracted = [jobs[n][0] for n in jobs if n.startswith('extract')]
    for name in jobs:
        if name.startswith('extract'):
            assert by_name[name]['status'] == 'success', by_name[name]
            assert classes[str(jobs[name][0])] == [
                'spacer.messages.JobReturnMsg', 'spacer.messages.JobMsg',
                'spacer.messages.ExtractFeaturesReturnMsg']

    # 2. Training (0.13: trainer_name), a stale one, and a revoked one.
    (data / 'extracted.json').write_text(json.dumps(extracted))
    trained = run_django(env, 'pyspacer_jobs', 'train', str(data),
                         python=python)
    Client(app).cancel(trained['revoked'][1])
    time.sleep(0.5)
    app.control.add_consumer('train_high', reply=True, timeout=5)
    by_name, classes = _collect_until_settled(env, python, trained)
    assert by_name['train']['status'] == 'success', by_name['train']
    assert classes[str(trained['train'][0])] == [
        'spacer.messages.JobReturnMsg', 'spacer.messages.JobMsg',
        'spacer.messages.TrainClassifierReturnMsg']
    # The web process reads the ValResults with its own PySpacer.
    valresults = subprocess.run(
        [python, '-c', 'import sys; from spacer.data_classes import '
         'DataLocation, ValResults; v = ValResults.load(DataLocation('
         '"filesystem", sys.argv[1])); print(type(v).__module__, '
         'len(v.gt), len(v.est), sorted(set(v.gt)))',
         str(data / 'clf.valresult.json')],
        env=env, capture_output=True, text=True, check=True).stdout.split()
    assert valresults[0] == 'spacer.data_classes'
    assert int(valresults[1]) == int(valresults[2]) > 0

    # 3. Classification with the classifier just trained.
    scored = run_django(env, 'pyspacer_jobs', 'classify', str(data),
                        python=python)
    by_name, classes = _collect_until_settled(env, python, scored)
    assert by_name['classify']['status'] == 'success', by_name['classify']
    assert classes[str(scored['classify'][0])] == [
        'spacer.messages.JobReturnMsg', 'spacer.messages.JobMsg',
        'spacer.messages.ClassifyReturnMsg']

    # Every failure, sorted as CoralNet sorts it.
    report = run_django(env, 'collect_jobs', python=python)
    by_name = {job['name']: job for job in report['sorted'].values()}
    for name, (error_class, sort) in FAILURES.items():
        job = by_name[name]
        assert job['status'] == 'error', (name, job)
        assert job['error_class'] == error_class, (name, job)
        assert job['user_error'] is (sort == 'user'), (name, job)
        assert job['features_reset'] is (sort == 'reset features'), (name, job)
    # Each job handed back exactly once.
    assert report['handled'] == []
    assert {job['name']: 1 for job in report['sorted'].values()} == \
        {name: 1 for name in by_name}


def test_the_client_goes_into_coralnets_venv_without_moving_a_pin():
    """scripts/client-venv-py310.sh installs CoralNet's pins (PySpacer
    0.13.0 included) on Python 3.10, then asks pip for a dry-run report of
    spacer_worker[client]; nothing installed may change version."""
    if os.environ.get('SPACER_SKIP_PYTHON310'):
        # scripts/test.sh found no Python 3.10 and says how to get one.
        pytest.skip(os.environ['SPACER_SKIP_PYTHON310'])
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'client-venv-py310.sh')],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 and not os.environ.get('CI') and \
            'Python 3.10 unavailable' in done.stderr:
        pytest.skip(done.stderr[-500:])
    assert done.returncode == 0, done.stderr[-3000:]
    venv = Path(done.stdout.strip().splitlines()[-1])
    def norm(name: str) -> str:
        return name.lower().replace('_', '-')

    before = {norm(p['name']): p['version'] for p in
              json.loads((venv / 'before-client.json').read_text())}
    report = json.loads((venv / 'client-install-report.json').read_text())
    assert before['pyspacer'] == '0.13.0' and before['redis'].startswith('4.5.')
    assert before['django'].startswith('4.2.')
    installs = {norm(i['metadata']['name']): i['metadata']['version']
                for i in report['install']}
    assert 'celery' in installs
    moved = {name: (before[name], version)
             for name, version in installs.items()
             if name in before and before[name] != version}
    assert moved == {}
