"""One wall-clock deadline over every phase of a download.

Socket timeouts bound each single read, not a whole phase: a host that
sends its status line or headers one byte a second never lets a read time
out, and urllib parses both before the caller sees a response. A
:class:`Deadline` therefore arms a timer for the whole download
(URL_DOWNLOAD_TIMEOUT). Every connection made under it (redirects included)
gets at most the time left to connect, and when the timer fires it shuts
the connections down, which ends any read blocked in connect, status line,
headers or body (plain or TLS alike). The reader then sees
:attr:`Deadline.expired` and raises its timeout error.

Cost: one sleeping timer thread per download in flight.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Connector = Callable[..., socket.socket]


class Deadline:
    """A download's deadline; use as a context manager around it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self._at - time.monotonic())

    def connector(self, inner: Connector = socket.create_connection
                  ) -> Connector:
        """``inner`` (socket.create_connection or a guard's), with the
        connect timeout cut to the time left and the socket registered
        so that the deadline can end it."""
        def create_connection(address: tuple[str, int],
                              timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
                              *args: Any, **kwargs: Any) -> socket.socket:
            left = self.remaining()
            if self.expired or left <= 0:
                raise TimeoutError('download deadline passed')
            if timeout is socket._GLOBAL_DEFAULT_TIMEOUT or timeout is None \
                    or timeout > left:
                timeout = left
            sock = inner(address, timeout, *args, **kwargs)
            self._watch(sock)
            return sock
        return create_connection

    def _watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor: TLS wrapping detaches ``sock`` itself,
        # but shutdown() on any descriptor ends the connection for all.
        dup = sock.dup()
        with self._lock:
            if not self.expired:
                self._sockets.append(dup)
                return
        _shut(dup)
        dup.close()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass            # already closed by the peer or by us
