"""Local HTTP servers for the tests: :func:`serve` runs any handler;
:func:`serve_files` serves in-memory files for attack tests through a
real worker, on 127.0.0.3, the one private address those tests let the
worker reach (Redis and everything else on 127.0.0.1 stay out of bounds).

``server.files`` maps paths to bytes; ``server.hits`` lists the paths
asked for. ``/redirect?to=<url>`` answers 302 to that URL, and a path
under ``/gated/`` waits for ``server.gate`` before answering (a download
held open while a test acts).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path.startswith('/redirect?to='):
            self.send_response(302)
            self.send_header('Location', self.path.split('=', 1)[1])
            self.end_headers()
            return
        if self.path.startswith('/gated/'):
            self.server.gate.wait(60)
        body = self.server.files.get(self.path.replace('/gated/', '/', 1))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, bytes]

    def handle_error(self, request, client_address) -> None:
        # Clients giving up early (timeouts, size limits, refusals) is what
        # the tests provoke; the broken pipes that follow are expected.
        pass


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler],
          host: str = '127.0.0.3') -> Iterator[QuietServer]:
    """A server of ``handler``, running inside the ``with`` block."""
    server = QuietServer((host, 0), handler)
    server.files, server.hits, server.gate = {}, [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        server.shutdown()
        server.server_close()


def serve_files() -> contextlib.AbstractContextManager[QuietServer]:
    """The file server on 127.0.0.3."""
    return serve(_Handler)
