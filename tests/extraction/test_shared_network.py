"""The shared network server (EXTRACT_SHARED_NETWORK): a real server
process on a real Unix socket, tasks in threads of this process as pool
processes would send them; one run through a real prefork Celery worker
is in tests/distributed/test_shared_network_worker.py."""

from __future__ import annotations

import json
import os
import signal
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import ExtractionServerError, WeightsLoadError
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime import shared
from spacer_worker.extractors.runtime.architecture import FEATURE_DIM
from spacer_worker.extractors.runtime.calibration import synthetic_texture
from tests.extraction.conftest import needs_torch
from tests.services import wait_for

BATCH = 16          # the server's forward pass; tasks send a quarter


def _image(seed: int):
    return synthetic_texture(np.random.default_rng(seed), 256).resize(
        (400, 300))


def _points(seed: int, count: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(300)), int(rng.integers(400)))
            for _ in range(count)]


@pytest.fixture
def torch_cpu(monkeypatch):
    """The server and this process run the same (torch, CPU) network."""
    needs_torch()  # the shared server is the GPU hosts' (PyTorch) path
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', 'torch')
    monkeypatch.setenv('SPACER_TORCH_DEVICE', 'cpu')
    monkeypatch.setenv('SPACER_EXTRACT_BATCH_SIZE', str(BATCH))
    monkeypatch.setenv('SPACER_EXTRACT_THREADS', '1')


@pytest.fixture
def server(torch_cpu):
    process = shared.ServerProcess().start()
    process.wait_ready(60)
    shared.use_server(process.address)
    try:
        yield process
    finally:
        shared.use_server(None)
        process.stop()


def test_the_feature_dimension_is_the_networks():
    assert shared.FEATURE_DIM == FEATURE_DIM


def test_concurrent_tasks_share_forward_passes_and_each_gets_its_rows(
        weights, torch_cpu):
    # Given four images and what this process's own network makes of them,
    images = [_image(i) for i in range(4)]
    points = [_points(10 + i, 48) for i in range(4)]
    extractor = weights.extractor()
    local = [extractor(im, p)[0].feature_array()
             for im, p in zip(images, points, strict=True)]
    # when four tasks extract at once through one server,
    process = shared.ServerProcess().start()
    shared.use_server(process.address)
    try:
        results: list = [None] * 4
        errors: list = []

        def task(i: int) -> None:
            try:
                results[i] = extractor(images[i], points[i])[0]
            except Exception as e:      # reported below
                errors.append(e)

        threads = [threading.Thread(target=task, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        stats = shared.server_stats(process.address)
    finally:
        shared.use_server(None)
        process.stop()
    assert errors == []
    # then each task gets its own points' features, in its order,
    for mine, result, want in zip(points, results, local, strict=True):
        assert [(p.row, p.col) for p in result.point_features] == mine
        np.testing.assert_allclose(result.feature_array(), want,
                                   rtol=0, atol=1e-4)
    # and the server ran full forward passes mixing several tasks' patches.
    assert stats['patches'] == 4 * 48
    assert stats['largest'] == BATCH
    assert stats['mixed'] >= 1
    assert stats['batches'] < 4 * 48 // (BATCH // 4)


def test_weights_are_sent_once_and_a_bad_file_is_a_weights_error(
        weights, server, tmp_path):
    # Given weights the server has built once,
    extractor = weights.extractor()
    extractor(_image(0), _points(0, 4))
    # a task that names them by hash runs even when the file is gone here,
    copy = tmp_path / 'w.pt'
    copy.write_bytes(weights.path.read_bytes())
    moved = EfficientNetExtractor(
        data_locations={'weights': DataLocation('filesystem', str(copy))},
        data_hashes={'weights': weights.sha256})
    copy.unlink()
    features, _ = moved(_image(1), _points(1, 4))
    assert features.feature_array().shape == (4, FEATURE_DIM)
    # while weights the network cannot take fail as WeightsLoadError
    # (permanent: not retried), and the server goes on serving.
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a torch file' * 100)
    with pytest.raises(WeightsLoadError, match='junk.pt'):
        EfficientNetExtractor(data_locations={
            'weights': DataLocation('filesystem', str(junk))})(
                _image(2), _points(2, 3))
    again, _ = extractor(_image(0), _points(0, 4))
    assert again.feature_array().shape == (4, FEATURE_DIM)


def test_a_wrong_key_is_refused_and_the_server_serves_on(weights, server):
    with pytest.raises(AuthenticationError):
        Client(server.address.path, family='AF_UNIX', authkey=b'x' * 32)
    features, _ = weights.extractor()(_image(3), _points(3, 5))
    assert features.feature_array().shape == (5, FEATURE_DIM)


@pytest.mark.parametrize('header, payload', [
    # A request that announces more patches than any task sends,
    ({'op': 'run', 'id': 1, 'sha256': 'a' * 64, 'count': 10 ** 9}, None),
    # one whose bytes are not the patches it announced,
    ({'op': 'run', 'id': 1, 'sha256': 'a' * 64, 'count': 2}, b'\0' * 100),
    # weights larger than any network,
    ({'op': 'load', 'sha256': 'a' * 64, 'where': 'x', 'size': 2 ** 40}, None),
    # an unknown operation, and a header that is not an object.
    ({'op': 'shell', 'cmd': 'id'}, None),
    ([1, 2, 3], None),
])
def test_a_malformed_request_closes_only_its_connection(weights, server,
                                                         header, payload):
    # Given a connection from a pool process gone wrong,
    with Client(server.address.path, family='AF_UNIX',
                authkey=server.address.authkey) as conn:
        conn.send_bytes(json.dumps(header).encode())
        if payload is not None:
            conn.send_bytes(payload)
        # then it is told why and closed,
        reply = json.loads(conn.recv_bytes())
        assert reply['ok'] is False
        assert 'malformed request' in reply['message']
        with pytest.raises(EOFError):
            conn.recv_bytes()
    # and other tasks are served as before.
    features, _ = weights.extractor()(_image(4), _points(4, 6))
    assert features.feature_array().shape == (6, FEATURE_DIM)


def test_a_task_that_dies_mid_request_does_not_stop_the_others(weights,
                                                               server):
    # Given a pool process killed after announcing patches and sending
    # half of their bytes,
    extractor = weights.extractor()
    extractor(_image(0), _points(0, 2))          # the server holds them
    conn = Client(server.address.path, family='AF_UNIX',
                  authkey=server.address.authkey)
    conn.send_bytes(json.dumps({'op': 'run', 'id': 1,
                                'sha256': weights.sha256,
                                'count': 4}).encode())
    conn._send(b'\0\0\x09\x30' + b'\0' * 1000)  # a length, then too little
    conn.close()
    # the next tasks run as usual.
    features, _ = extractor(_image(5), _points(5, 8))
    assert features.feature_array().shape == (8, FEATURE_DIM)


def test_a_dead_server_fails_tasks_as_retryable_and_comes_back(weights,
                                                               server):
    extractor = weights.extractor()
    extractor(_image(0), _points(0, 2))
    first = server.pid
    # When the server process is killed (an out-of-memory kill, a crash),
    os.kill(first, signal.SIGKILL)
    # a task in that moment fails with a transient error a retry handles,
    with pytest.raises(ExtractionServerError):
        extractor(_image(6), _points(6, 4))
    # and the worker's process starts the server again, which serves.
    wait_for(lambda: server.pid != first, timeout=30,
             what='the shared network server restarted')
    server.wait_ready(60)
    features, _ = extractor(_image(6), _points(6, 4))
    assert features.feature_array().shape == (4, FEATURE_DIM)
    assert server.restarts == 1
