"""The several-hosts recipe of docs/operations.md: workers reach Redis over
TLS with a rediss:// URL that verifies the server against a private CA."""

from __future__ import annotations

import os
import subprocess

from tests.deploy.conftest import REPO, require_tool
from tests.services import free_port, kill_group, wait_for


def make_certificates(directory) -> None:
    openssl = require_tool('openssl', 'apt-get install openssl')

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True,
                       capture_output=True)
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
        '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=spacer-test-ca')
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'redis.key',
        '-out', 'redis.csr', '-subj', '/CN=localhost')
    (directory / 'san.ext').write_text(
        'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
    run('x509', '-req', '-in', 'redis.csr', '-CA', 'ca.crt', '-CAkey',
        'ca.key', '-CAcreateserial', '-days', '2', '-out', 'redis.crt',
        '-extfile', 'san.ext')


def test_worker_and_client_work_through_tls_redis(tmp_path):
    redis_server = require_tool('redis-server', 'scripts/test.sh installs it')
    make_certificates(tmp_path)
    port = free_port()
    procs = [subprocess.Popen(
        [redis_server, '--port', '0', '--tls-port', str(port),
         '--bind', '127.0.0.1', '--tls-cert-file', 'redis.crt',
         '--tls-key-file', 'redis.key', '--tls-ca-cert-file', 'ca.crt',
         '--tls-auth-clients', 'no', '--requirepass', 'tls-test-password',
         '--save', '', '--appendonly', 'no'],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)]
    query = f'ssl_cert_reqs=required&ssl_ca_certs={tmp_path / "ca.crt"}'
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'CELERY_', 'WORKER_'))}
    env.update({
        'SPACER_BROKER_URL':
            f'rediss://:tls-test-password@localhost:{port}/0?{query}',
        'SPACER_RESULT_BACKEND':
            f'rediss://:tls-test-password@localhost:{port}/1?{query}',
        'SPACER_SECRETS_PATH': str(tmp_path / 'no-secrets.json'),
        'WORKER_NODES_FILE': str(tmp_path / 'nodes'),
        'PYTHONPATH': str(REPO),
    })
    try:
        procs.append(subprocess.Popen(
            [str(REPO / 'docker' / 'entrypoint.sh'), 'worker', 'train',
             '--queues=train'], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))

        def healthy() -> bool:
            return subprocess.run(
                ['python3', str(REPO / 'docker' / 'healthcheck.py')],
                env=env, capture_output=True, timeout=60).returncode == 0
        wait_for(healthy, 60, what='worker answering through TLS')

        # A task round trip over TLS: bad input comes back as a failure.
        # Poll the stored state (as spacer_worker's client does) rather
        # than wait on a pub/sub subscription.
        client = subprocess.run(['python3', '-c', '''
import time
from spacer_worker.celery import app
result = app.send_task('spacer.train_classifier', args=[{'bogus': 1}],
                       queue='train')
deadline = time.monotonic() + 60
while result.state not in ('SUCCESS', 'FAILURE') and time.monotonic() < deadline:
    time.sleep(0.2)
info = result.info
print(result.state, type(info).__name__, info)
print(result.traceback)
'''], env=env, capture_output=True, text=True, timeout=120)
        # PySpacer's class on the wire, ours in the traceback.
        assert client.stdout.startswith("FAILURE ValueError"), \
            client.stdout + client.stderr
        assert "spacer_worker.exceptions.MessageError" in client.stdout
        assert "'bogus'" in client.stdout
    finally:
        for proc in procs:
            kill_group(proc)
            proc.wait(10)
