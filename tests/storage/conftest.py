"""Real servers for storage tests: an HTTP server with misbehaving routes,
an S3 endpoint (moto in server mode), and a fake S3 that only errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.file_server import QuietServer, serve
from tests.services import free_port, use_s3_endpoint


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


class FileServerHandler(BaseHTTPRequestHandler):
    """Routes: /files/<name> serves bytes; the others misbehave on purpose."""

    protocol_version = 'HTTP/1.1'

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b'', length: int | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header('Content-Length',
                         str(len(body) if length is None else length))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        path = self.path
        if path.startswith('/files/'):
            data = self.server.files.get(path[len('/files/'):])
            if data is None:
                self._send(404, b'not found', head=head)
            else:
                self._send(200, data, head=head)
        elif path.startswith('/redirect?to='):
            self.send_response(302)
            self.send_header('Location', path[len('/redirect?to='):])
            self.send_header('Content-Length', '0')
            self.end_headers()
        elif path == '/no-head':
            self._send(405 if head else 200, b'' if head else b'body',
                       head=head)
        elif path == '/unavailable':
            self._send(503, b'try later', head=head)
        elif path == '/throttled':
            self._send(429, b'slow down', head=head)
        elif path == '/forbidden':
            self._send(403, b'no', head=head)
        elif path == '/teapot':
            self._send(418, b'short and stout', head=head)
        elif path == '/slow':
            time.sleep(3)
            self._send(200, b'late', head=head)
        elif path == '/trickle':
            # Headers at once, then a byte every 0.2 s for a long time.
            self.send_response(200)
            self.send_header('Content-Length', '1000')
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b'x')
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        elif path in ('/drip-status', '/drip-headers'):
            # The status line (or the headers after it) a byte every 0.2 s:
            # every single read succeeds, only a whole-download deadline
            # ends it.
            head_text = b'HTTP/1.1 200 OK\r\n'
            rest = b'X-Filler: ' + b'a' * 400 + b'\r\n' * 2
            if path == '/drip-headers':
                self.wfile.write(head_text)
                self.wfile.flush()
                head_text = b''
            drip_bytes(self.wfile, head_text + rest)
            self.close_connection = True
        elif path == '/big-declared':
            self._send(200, b'x' * 100, length=10 ** 9, head=head)
            self.close_connection = True
        elif path == '/big-stream':
            # No Content-Length: the size shows only while streaming.
            self.send_response(200)
            self.send_header('Connection', 'close')
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(64):
                    self.wfile.write(b'y' * 65536)
            except OSError:
                pass
        elif path == '/truncated':
            self._send(200, b'z' * 10, length=1000, head=head)
            self.close_connection = True
        else:
            self._send(404, b'unknown route', head=head)


def drip_bytes(stream, data: bytes, pause: float = 0.2) -> None:
    """Write ``data`` a byte at a time, until done or the client leaves."""
    try:
        for i in range(len(data)):
            stream.write(data[i:i + 1])
            stream.flush()
            time.sleep(pause)
    except OSError:
        pass


@pytest.fixture(scope='session')
def http_server() -> Iterator[QuietServer]:
    with serve(FileServerHandler, '127.0.0.1') as server:
        yield server


@pytest.fixture
def base_url(http_server: QuietServer) -> str:
    http_server.files.clear()
    return f'http://127.0.0.1:{http_server.server_address[1]}'


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[Callable[[int, str], None]]:
    """An HTTP server that answers every S3 call with one error; call the
    fixture with (status, S3 error code) to choose it."""
    state = {'status': 503, 'code': 'SlowDown'}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get('Content-Length') or 0)
            if length:
                self.rfile.read(length)
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                    f'{state["code"]}</Code><Message>fake</Message></Error>'
                    ).encode()
            self.send_response(state['status'])
            self.send_header('Content-Type', 'application/xml')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _answer

    with serve(Handler, '127.0.0.1') as server:
        use_s3_endpoint(monkeypatch,
                        f'http://127.0.0.1:{server.server_address[1]}')

        def configure(status: int, code: str) -> None:
            state.update(status=status, code=code)

        yield configure
