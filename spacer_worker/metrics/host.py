"""The Prometheus endpoint of a worker host: one port, every worker's numbers.

Each worker (celery node) records into its own subdirectory of the host's
metrics directory (``<METRICS_DIR>/<node>-<pid namespace>-<pid>``), so a
worker that starts clears nothing but its own files. Every worker tries to bind
``METRICS_BIND:METRICS_PORT``; the one that gets it serves the merged files
of all subdirectories, the others try again every ``SERVE_RETRY`` seconds,
so one takes over when the serving worker stops. Files of dead processes
are left out of the "live" gauges (tasks in flight), and subdirectories of
dead workers are removed when a worker starts.

"Host" means one PID namespace: the workers of one machine, or of one
container. Two containers that share the directory (compose replicas that
mount one volume as /tmp, or one ``METRICS_DIR`` volume) never merge,
count or remove each other's files: a pid means nothing in another
namespace, and each container's endpoint must serve its own numbers only,
or every replica would report the sum of all of them. The default
directory carries the hostname too, so such containers do not even meet.
"""

from __future__ import annotations

import base64
import glob
import hmac
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spacer_worker import config

logger = logging.getLogger(__name__)

SERVE_RETRY = 10.0


def base_directory(port: int) -> str:
    explicit = (config.get('METRICS_DIR') or '').strip()
    if explicit:
        return explicit
    host = _safe(socket.gethostname())
    return os.path.join(tempfile.gettempdir(),
                        f'spacer-worker-metrics-{port}-{host}')


def _safe(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '._@' else '_' for c in name)


def pid_namespace() -> str:
    """This process's PID namespace (its inode), '0' where unknown: pids
    are compared only within one."""
    try:
        return str(os.stat('/proc/self/ns/pid').st_ino)
    except OSError:
        return '0'


def _entry_pid(name: str, namespace: str) -> int | None:
    """The pid in a subdirectory name ``<node>-<ns>-<pid>`` when it is of
    this namespace; None for another namespace's (or a stray) entry."""
    rest, _, pid = name.rpartition('-')
    ns = rest.rpartition('-')[2]
    if ns != namespace or not pid.isdigit():
        return None
    return int(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_directory(base: str, node: str) -> str:
    """A fresh subdirectory for this worker; removes those of dead ones."""
    os.makedirs(base, exist_ok=True)
    namespace = pid_namespace()
    for entry in os.scandir(base):
        pid = _entry_pid(entry.name, namespace)
        if entry.is_dir() and pid is not None and not _alive(pid):
            shutil.rmtree(entry.path, ignore_errors=True)
    path = os.path.join(base, f'{_safe(node)}-{namespace}-{os.getpid()}')
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _live_files(base: str) -> list[str]:
    namespace = pid_namespace()
    files = []
    for path in glob.glob(os.path.join(base, '*', '*.db')):
        if _entry_pid(os.path.basename(os.path.dirname(path)),
                      namespace) is None:
            continue    # another container's worker: its endpoint serves it
        parts = os.path.basename(path)[:-3].split('_')
        # gauge_livesum_<pid>.db: only while <pid> runs.
        if parts[0] == 'gauge' and parts[1].startswith('live') and \
                parts[-1].isdigit() and not _alive(int(parts[-1])):
            continue
        files.append(path)
    return files


class HostCollector:
    """Merges every worker's files under ``base`` at each scrape."""

    def __init__(self, base: str) -> None:
        self.base = base

    def collect(self) -> Iterable[Any]:
        # Lazy: prometheus_client must load after recording set PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client.multiprocess import MultiProcessCollector
        return MultiProcessCollector.merge(_live_files(self.base),
                                           accumulate=True)


def auth_check(credentials: str) -> Any:
    """A basic-auth check for ``user:password``, or None for no auth."""
    if not credentials:
        return None
    expected = 'Basic ' + base64.b64encode(credentials.encode()).decode()

    def check(header: str | None) -> bool:
        return header is not None and hmac.compare_digest(
            header.encode(), expected.encode())
    return check


def make_server(registry: Any, bind: str, port: int,
                credentials: str = '') -> ThreadingHTTPServer:
    """A /metrics HTTP server (not started); OSError when the port is
    taken."""
    # Lazy: prometheus_client must load after recording set PROMETHEUS_MULTIPROC_DIR.
    from prometheus_client.exposition import (
        CONTENT_TYPE_LATEST,
        generate_latest,
    )

    check = auth_check(credentials)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if check is not None and not check(self.headers.get(
                    'Authorization')):
                self.send_response(401)
                self.send_header('WWW-Authenticate',
                                 'Basic realm="spacer_worker metrics"')
                self.end_headers()
                return
            if self.path.split('?', 1)[0] not in ('/metrics', '/'):
                self.send_error(404, 'Only /metrics is served here.')
                return
            try:
                body = generate_latest(registry)
            except Exception as e:
                logger.exception('Could not collect metrics')
                self.send_error(500, f'Could not collect metrics: {e}')
                return
            self.send_response(200)
            self.send_header('Content-Type', CONTENT_TYPE_LATEST)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug('metrics: ' + format, *args)

    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    return server


class HostEndpoint:
    """Serve the host's metrics when this worker holds the port."""

    def __init__(self, base: str, bind: str, port: int,
                 credentials: str = '') -> None:
        # Lazy: prometheus_client must load after recording set PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client import CollectorRegistry

        self.bind, self.port, self.credentials = bind, port, credentials
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HostCollector(base))
        self.server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='spacer-metrics-endpoint')

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        told = False
        while not self._stop.is_set():
            try:
                server = make_server(self.registry, self.bind, self.port,
                                     self.credentials)
            except OSError as e:
                if not told:
                    logger.info('Metrics port %s:%d is taken (%s): another '
                                'worker of this host serves it; trying again '
                                'every %.0f s.', self.bind, self.port,
                                e.strerror, SERVE_RETRY)
                    told = True
                self._stop.wait(SERVE_RETRY)
                continue
            self.server = server
            logger.info('Serving this host\'s worker metrics on http://%s:%d'
                        '/metrics', self.bind, self.port)
            server.serve_forever(poll_interval=0.5)
            return

    def close_in_child(self) -> None:
        """In a forked pool child: drop the inherited listening socket, so
        the port is free once the parent is gone."""
        if self.server is not None:
            self.server.socket.close()

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
