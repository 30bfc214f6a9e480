"""One network for every pool process of a worker: a batching server.

A GPU worker that runs one task at a time leaves its GPU idle most of the
time: the task spends its time decoding a 12-megapixel JPEG and cutting
patches on the CPU, then sends the GPU a forward pass of 200 patches that
it runs in a few milliseconds. More pool processes (``--concurrency N``)
put several images on the CPUs at once, but each would hold its own copy of
the network and send the GPU its own small batches.

With EXTRACT_SHARED_NETWORK on, the worker's main process starts one
network server (a spawned process, so the parent never touches CUDA) and
its pool processes send their patches there instead of building a network.
The server's batching thread runs the patches waiting from every task as
one forward pass of up to the backend's batch size and hands each task its
rows. The pool stays prefork, so time limits, revoke and
max-memory-per-child work as before; a pool process killed mid-task loses
only its own requests, and a server that dies is started again by the
main process (tasks meanwhile fail with ExtractionServerError, retried).

The wire is ``multiprocessing.connection`` over a Unix socket in a private
(0700) folder, authenticated by a random key the pool processes inherit
from the main process. Each message is a JSON header, followed (patches,
features, weights) by one raw buffer of a size the header announced and
the receiver bounds. Nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from typing import TYPE_CHECKING, Any

import numpy as np

from spacer_worker import config, exceptions
from spacer_worker.exceptions import ExtractionServerError, SpacerError
from spacer_worker.extractors.runtime.architecture import FEATURE_DIM
from spacer_worker.extractors.runtime.patches import CROP_SIZE, iter_patch_batches

if TYPE_CHECKING:
    from PIL import Image

    from spacer_worker.extractors.runtime.engine import Network
    from spacer_worker.extractors.runtime.weights import ExtractorFiles

logger = logging.getLogger(__name__)

PATCH_BYTES = CROP_SIZE * CROP_SIZE * 3
MAX_HEADER_BYTES = 4096
MAX_REQUEST_PATCHES = 1024
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
# Requests (quarter batches) one task keeps at the server while it cuts
# the next: a full batch, so a few tasks keep the next forward pass full
# while the current one runs.
IN_FLIGHT = 4
# How long the batching thread waits for another task's patches when the
# batch is not full and some connected task has nothing queued yet.
LINGER_S = 0.003
CONNECT_TIMEOUT_S = 120.0   # a server still starting (imports torch)
REPLY_TIMEOUT_S = 600.0     # one request's answer; a wedged GPU, not work
SUMMARY_INTERVAL_S = 300.0


def enabled() -> bool:
    """Whether this worker runs a shared network server."""
    return bool(config.get('EXTRACT_SHARED_NETWORK'))


# --- pool-process side -------------------------------------------------------

@dataclass(frozen=True)
class ServerAddress:
    path: str
    authkey: bytes


# Set in the worker's main process before its pool forks; inherited.
_address: ServerAddress | None = None


def server_configured() -> bool:
    return _address is not None


def use_server(address: ServerAddress | None) -> None:
    """Send this process's extraction to the server at ``address`` (None:
    run it here again)."""
    global _address
    _address = address
    _connections.clear()


class _ServerConnection:
    """One thread's connection to the server (a pool process or a thread
    of the threads pool runs one task at a time)."""

    def __init__(self, address: ServerAddress):
        self.address = address
        self.lock = threading.Lock()
        self.conn: Connection | None = None
        self.next_id = 0

    def connect(self) -> Connection:
        if self.conn is not None:
            return self.conn
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        delay = 0.05
        while True:
            try:
                self.conn = Client(self.address.path, family='AF_UNIX',
                                   authkey=self.address.authkey)
                return self.conn
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline:
                    raise ExtractionServerError(
                        f"The worker's shared network server at "
                        f"{self.address.path} did not accept a connection "
                        f"in {CONNECT_TIMEOUT_S:.0f} s ({e}); see the "
                        f"worker's log for why it is not running.") from e
            except (OSError, EOFError, multiprocessing.AuthenticationError
                    ) as e:
                raise ExtractionServerError(
                    f"Could not connect to the worker's shared network "
                    f"server at {self.address.path}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn = None


_connections: dict[tuple[int, int], _ServerConnection] = {}
_connections_pid = os.getpid()


def _connection() -> _ServerConnection:
    global _connections_pid
    if _address is None:
        raise ExtractionServerError('No shared network server is configured '
                                    'in this process.')
    if _connections_pid != os.getpid():
        _connections.clear()        # forked: the parent's sockets are not ours
        _connections_pid = os.getpid()
    key = (os.getpid(), threading.get_ident())
    if key not in _connections:
        _connections[key] = _ServerConnection(_address)
    return _connections[key]


def _send(conn: Connection, header: dict, payload: Any = None) -> None:
    conn.send_bytes(json.dumps(header).encode())
    if isinstance(payload, np.ndarray):
        # As flat bytes: send_bytes counts a buffer's length in its first
        # dimension, not in bytes.
        payload = np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
    if payload is not None:
        conn.send_bytes(payload)


def _receive_header(conn: Connection, timeout: float) -> dict:
    if not conn.poll(timeout):
        raise ExtractionServerError(
            f"The worker's shared network server sent no answer in "
            f"{timeout:.0f} s; it may be stuck on its device.")
    try:
        header = json.loads(conn.recv_bytes(MAX_HEADER_BYTES))
    except ValueError as e:
        header = e
    if not isinstance(header, dict):
        raise ExtractionServerError('The shared network server sent a '
                                    'malformed answer.')
    return header


def _raise_reply_error(header: dict) -> None:
    """Raise the error a reply carries, as its own type where it is one of
    ours (a WeightsLoadError stays permanent), else ExtractionServerError."""
    name, message = str(header.get('error')), str(header.get('message'))
    kind = getattr(exceptions, name, None)
    if isinstance(kind, type) and issubclass(kind, SpacerError):
        raise kind(message)
    raise ExtractionServerError(
        f"The worker's shared network server failed: {name}: {message}")


class RemoteNetwork:
    """A task's view of the server's network for one set of weights."""

    def __init__(self, sha256: str, piece: int):
        self.sha256 = sha256
        self.piece = piece

    def extract(self, im: Image.Image, rowcols: Sequence[tuple[int, int]]
                ) -> np.ndarray:
        """Features at ``rowcols``, patches cut here, run by the server.

        Keeps IN_FLIGHT requests at the server while cutting the next, so
        the CPU and the device work at once even for a single task.
        """
        out = np.empty((len(rowcols), FEATURE_DIM), np.float32)
        server = _connection()
        with server.lock:
            try:
                conn = server.connect()
                pending: deque[tuple[int, int, int]] = deque()
                start = 0
                for batch in iter_patch_batches(im, rowcols, self.piece,
                                                CROP_SIZE):
                    server.next_id += 1
                    _send(conn, {'op': 'run', 'id': server.next_id,
                                 'sha256': self.sha256, 'count': len(batch)},
                          batch)
                    pending.append((server.next_id, start, len(batch)))
                    start += len(batch)
                    while len(pending) >= IN_FLIGHT:
                        _receive_features(conn, out, *pending.popleft())
                while pending:
                    _receive_features(conn, out, *pending.popleft())
            except (OSError, EOFError) as e:
                server.drop()
                raise ExtractionServerError(
                    f"Lost the connection to the worker's shared network "
                    f"server mid-task ({type(e).__name__}: {e}); it is "
                    f"restarted by the worker, so a retry may pass.") from e
            except BaseException:
                # Answers to requests still in flight would confuse the next
                # task: start over on a fresh connection.
                server.drop()
                raise
        return out


def _receive_features(conn: Connection, out: np.ndarray, request_id: int,
                      start: int, count: int) -> None:
    header = _receive_header(conn, REPLY_TIMEOUT_S)
    if not header.get('ok'):
        _raise_reply_error(header)
    if header.get('id') != request_id:
        raise ExtractionServerError(
            f"The shared network server answered request {header.get('id')} "
            f"where {request_id} was expected.")
    rows = out[start:start + count]
    received = conn.recv_bytes_into(memoryview(rows).cast('B'))
    if received != rows.nbytes:
        raise ExtractionServerError(
            f'The shared network server sent {received} bytes of features '
            f'for {count} patches ({rows.nbytes} expected).')


def _ask(conn: Connection, header: dict, payload: Any = None) -> dict:
    _send(conn, header, payload)
    reply = _receive_header(conn, REPLY_TIMEOUT_S)
    if not reply.get('ok'):
        _raise_reply_error(reply)
    return reply


def remote_network(extractor: ExtractorFiles) -> tuple[RemoteNetwork, bool]:
    """The server's network for ``extractor``; the weights are fetched and
    verified here (this process's storage and allowlists) and sent to the
    server only when it does not hold them yet."""
    from spacer_worker.extractors.runtime import weights as weights_mod

    server = _connection()
    sha256 = weights_mod.expected_hash(extractor, 'weights')
    weights = None
    if sha256 is None:
        weights = weights_mod.fetch(extractor, 'weights')
        sha256 = weights.sha256
    with server.lock:
        try:
            conn = server.connect()
            reply = _ask(conn, {'op': 'network', 'sha256': sha256})
            if not reply.get('known'):
                if weights is None:
                    weights = weights_mod.fetch(extractor, 'weights')
                reply = _ask(conn, {
                    'op': 'load', 'sha256': weights.sha256,
                    'where': repr(extractor.data_locations['weights']),
                    'size': len(weights.data)}, weights.data)
        except (OSError, EOFError) as e:
            server.drop()
            raise ExtractionServerError(
                f"Lost the connection to the worker's shared network server "
                f"({type(e).__name__}: {e}); a retry may pass.") from e
        except BaseException:
            server.drop()           # an answer may still be on its way
            raise
    loaded_remotely = bool(weights is not None and weights.loaded_remotely)
    return RemoteNetwork(sha256, int(reply['piece'])), loaded_remotely


# --- server side -------------------------------------------------------------

@dataclass(eq=False)
class _Peer:
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True

    def send(self, header: dict, payload: Any = None) -> None:
        with self.send_lock:
            if not self.alive:
                return
            try:
                _send(self.conn, header, payload)
            except (OSError, EOFError, ValueError):
                self.alive = False


@dataclass(eq=False)
class _Request:
    peer: _Peer
    request_id: int
    network: Network
    patches: np.ndarray
    out: np.ndarray
    taken: int = 0        # rows handed to a batch
    finished: int = 0     # rows computed
    failed: bool = False


@dataclass
class ServerStats:
    batches: int = 0
    patches: int = 0
    largest: int = 0
    mixed: int = 0       # batches with patches of more than one task
    tasks: int = 0       # connections served

    def as_dict(self) -> dict:
        return {'batches': self.batches, 'patches': self.patches,
                'largest': self.largest, 'mixed': self.mixed,
                'tasks': self.tasks}


class NetworkServer:
    """The server's state: the queue of requests and its batching loop."""

    def __init__(self, listener: Listener):
        self.listener = listener
        self.queue: deque[_Request] = deque()
        self.peers: set[_Peer] = set()
        self.cond = threading.Condition()
        self.stats = ServerStats()
        self.stopping = False

    def serve_forever(self) -> None:
        threading.Thread(target=self._accept_loop, name='accept',
                         daemon=True).start()
        last_summary = time.monotonic()
        while not self.stopping:
            batch = self._next_batch(timeout=1.0)
            if batch:
                self._run(batch)
            if time.monotonic() - last_summary > SUMMARY_INTERVAL_S:
                self.log_summary()
                last_summary = time.monotonic()

    def log_summary(self) -> None:
        s = self.stats
        logger.info(
            'Shared extraction network: %d patches in %d forward passes '
            '(mean %.1f, largest %d), %d of them with patches of several '
            'tasks.', s.patches, s.batches, s.patches / max(s.batches, 1),
            s.largest, s.mixed)

    # Connections -------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError
                    ) as e:
                if self.stopping:
                    return
                logger.warning('Refused a connection to the shared network '
                               'server: %s', e)
                continue
            peer = _Peer(conn)
            with self.cond:
                self.peers.add(peer)
                self.stats.tasks += 1
            threading.Thread(target=self._serve_peer, args=(peer,),
                             name='peer', daemon=True).start()

    def _serve_peer(self, peer: _Peer) -> None:
        try:
            while peer.alive:
                header = json.loads(peer.conn.recv_bytes(MAX_HEADER_BYTES))
                if not isinstance(header, dict):
                    raise ValueError('a header is not a JSON object')
                self._handle(peer, header)
        except (EOFError, OSError):
            pass                       # the pool process closed or died
        except (ValueError, KeyError, TypeError) as e:
            logger.warning('Closing a connection to the shared network '
                           'server that sent a malformed request: %s', e)
            peer.send({'ok': False, 'error': 'ExtractionServerError',
                       'message': f'malformed request: {e}'})
        finally:
            with self.cond:
                peer.alive = False
                self.peers.discard(peer)
                self.queue = deque(r for r in self.queue if r.peer is not peer)
                self.cond.notify_all()
            try:
                peer.conn.close()
            except OSError:
                pass

    def _handle(self, peer: _Peer, header: dict) -> None:
        from spacer_worker.extractors.runtime import engine
        from spacer_worker.extractors.runtime import weights as weights_mod

        op = header['op']
        if op == 'network':
            network = engine.cached_network(str(header['sha256']))
            peer.send({'ok': True, 'known': network is not None,
                       'piece': self._piece(network)})
        elif op == 'load':
            size = int(header['size'])
            if not 0 < size <= MAX_WEIGHTS_BYTES:
                raise ValueError(f'weights of {size} bytes')
            data = peer.conn.recv_bytes(size + 1)
            if len(data) != size:
                raise ValueError(f'{len(data)} bytes of weights, {size} '
                                 f'announced')
            weights = weights_mod.Weights(data, weights_mod.sha256_of(data),
                                          loaded_remotely=False)
            if weights.sha256 != header['sha256']:
                raise ValueError('the weights do not match their sha256')
            try:
                network = engine.network_for(weights, str(header['where']))
            except SpacerError as e:
                peer.send({'ok': False, 'error': type(e).__name__,
                           'message': str(e)})
                return
            peer.send({'ok': True, 'known': True,
                       'piece': self._piece(network)})
        elif op == 'run':
            count = int(header['count'])
            if not 0 < count <= MAX_REQUEST_PATCHES:
                raise ValueError(f'a request of {count} patches')
            data = peer.conn.recv_bytes(count * PATCH_BYTES + 1)
            if len(data) != count * PATCH_BYTES:
                raise ValueError(f'{len(data)} bytes for {count} patches')
            network = engine.cached_network(str(header['sha256']))
            if network is None:
                peer.send({'ok': False, 'error': 'ExtractionServerError',
                           'message': 'the server no longer holds that '
                                      'network; retry the task'})
                return
            patches = np.frombuffer(data, np.uint8).reshape(
                count, CROP_SIZE, CROP_SIZE, 3)
            request = _Request(peer, int(header['id']), network, patches,
                               np.empty((count, FEATURE_DIM), np.float32))
            with self.cond:
                self.queue.append(request)
                self.cond.notify_all()
        elif op == 'stats':
            with self.cond:
                peer.send({'ok': True, **self.stats.as_dict()})
        else:
            raise ValueError(f'unknown operation {op!r}')

    @staticmethod
    def _piece(network: Network | None) -> int:
        # What a task sends at once: a quarter of a full batch, so a few
        # tasks' patches fill one forward pass.
        size = network.batch_size() if network is not None else 32
        return max(1, size // 4)

    # Batching ----------------------------------------------------------------

    def _next_batch(self, timeout: float
                    ) -> list[tuple[_Request, int, int]]:
        with self.cond:
            if not self.queue:
                self.cond.wait(timeout)
                if not self.queue:
                    return []
            network = self.queue[0].network
            limit = network.batch_size()
            deadline = time.monotonic() + LINGER_S
            while True:
                waiting = sum(len(r.patches) - r.taken for r in self.queue
                              if r.network is network)
                idle = len(self.peers) - len({r.peer for r in self.queue})
                left = deadline - time.monotonic()
                if waiting >= limit or idle <= 0 or left <= 0:
                    break
                self.cond.wait(left)
            batch: list[tuple[_Request, int, int]] = []
            room = limit
            for request in list(self.queue):
                if room == 0:
                    break
                if request.network is not network:
                    continue
                take = min(room, len(request.patches) - request.taken)
                batch.append((request, request.taken, request.taken + take))
                request.taken += take
                room -= take
                if request.taken == len(request.patches):
                    self.queue.remove(request)
            return batch

    def _run(self, batch: list[tuple[_Request, int, int]]) -> None:
        network = batch[0][0].network
        if len(batch) == 1:
            request, start, stop = batch[0]
            patches = request.patches[start:stop]
        else:
            patches = np.concatenate([r.patches[a:b] for r, a, b in batch])
        try:
            features = network.run_patches(patches)
        except Exception as e:  # one bad batch must not end the server
            logger.exception('A shared forward pass of %d patches failed.',
                             len(patches))
            self._fail(batch, e)
            return
        stats = self.stats
        stats.batches += 1
        stats.patches += len(patches)
        stats.largest = max(stats.largest, len(patches))
        stats.mixed += len({r.peer for r, _, _ in batch}) > 1
        offset = 0
        for request, start, stop in batch:
            request.out[start:stop] = features[offset:offset + stop - start]
            offset += stop - start
            request.finished += stop - start
            if request.finished == len(request.patches) and not request.failed:
                request.peer.send({'ok': True, 'id': request.request_id},
                                  request.out)

    def _fail(self, batch: list[tuple[_Request, int, int]], error: Exception
              ) -> None:
        with self.cond:
            for request, _, _ in batch:
                if request.failed:
                    continue
                request.failed = True
                if request in self.queue:
                    self.queue.remove(request)
                name = (type(error).__name__ if isinstance(error, SpacerError)
                        else 'ExtractionServerError')
                request.peer.send({
                    'ok': False, 'id': request.request_id, 'error': name,
                    'message': f'{type(error).__name__}: {error}'})


def serve(path: str, authkey: bytes, parent: int | None = None) -> None:
    """The server process's body: listen at ``path`` until stopped (or
    until the process that started it is gone)."""
    from spacer_worker.config.logs import configure_logging
    # Its stderr is the worker's: its lines land in the worker's log.
    configure_logging(default_destination='console')
    listener = Listener(path, family='AF_UNIX', authkey=authkey)
    server = NetworkServer(listener)
    signal.signal(signal.SIGTERM,
                  lambda *_: setattr(server, 'stopping', True))
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent, server),
                         name='parent-watch', daemon=True).start()
    logger.info('Shared extraction network server listening at %s.', path)
    try:
        server.serve_forever()
    finally:
        server.log_summary()
        listener.close()


def _exit_with_parent(parent: int, server: NetworkServer) -> None:
    # A worker killed with SIGKILL cannot stop us; its pid changes hands.
    while os.getppid() == parent:
        time.sleep(1.0)
    server.stopping = True


# --- the worker's main process -----------------------------------------------

class ServerProcess:
    """Starts the server, restarts it if it dies, stops it at shutdown.

    A plain subprocess, not a multiprocessing child: pool processes forked
    from the main process would otherwise terminate it as their "daemonic
    child" when they exit.
    """

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix='spacer-extract-')
        self.address = ServerAddress(os.path.join(self.folder, 'server.sock'),
                                     os.urandom(32))
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0

    def start(self) -> ServerProcess:
        self._spawn()
        threading.Thread(target=self._watch, name='extract-server-watch',
                         daemon=True).start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if os.path.exists(self.address.path):
                os.unlink(self.address.path)
            process = subprocess.Popen(
                [sys.executable, '-m', __name__, self.address.path,
                 str(os.getpid())], stdin=subprocess.PIPE)
            assert process.stdin is not None
            process.stdin.write(self.address.authkey.hex().encode())
            process.stdin.close()
            self._process = process
            logger.info('Started the shared extraction network server '
                        '(pid %d).', process.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            try:
                code = process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
            if self._stopping.is_set():
                return
            logger.error('The shared extraction network server exited '
                         '(code %s); starting it again.', code)
            self.restarts += 1
            self._stopping.wait(min(30.0, 0.25 * 2 ** min(self.restarts, 7)))
            if not self._stopping.is_set():
                self._spawn()

    def wait_ready(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Return once the server accepts connections (it imports torch and
        opens its device first: seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                server_stats(self.address)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise ExtractionServerError(
                        f'The shared extraction network server did not start '
                        f'listening in {timeout:.0f} s.') from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        shutil.rmtree(self.folder, ignore_errors=True)


def server_stats(address: ServerAddress) -> dict:
    """The server's counters (forward passes, patches, mixed batches)."""
    with Client(address.path, family='AF_UNIX', authkey=address.authkey
                ) as conn:
        return _ask(conn, {'op': 'stats'})


def _main(argv: list[str]) -> None:
    path, parent = argv
    authkey = bytes.fromhex(sys.stdin.read().strip())
    serve(path, authkey, int(parent))


if __name__ == '__main__':
    _main(sys.argv[1:])
