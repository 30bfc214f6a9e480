"""A worker connects only where its messages tell it to (issue 28, item 9).

The worker runs behind a recording proxy: HTTPS_PROXY, HTTP_PROXY and
ALL_PROXY (both cases) point at a local server that records the host of
every request or CONNECT and refuses it. URL storage ignores proxies by
design, so the messages' own downloads go straight to their host; what
reaches the proxy is traffic a library started on its own (ONNX Runtime's
1DS telemetry uploads through curl, which honours these variables). An
extraction on the ONNX Runtime backend (from a URL) and a classification
run, the worker stops as an operator stops it (flushing whatever a library
buffered), and the proxy must have seen nothing.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.messages import ExtractFeaturesMsg, ExtractFeaturesReturnMsg
from spacer_worker.storage.classifiers import dump_classifier
from tests.builders import classify_msg, fs, make_image
from tests.file_server import serve

TIMEOUT = 180


class RecordingProxy:
    """A proxy that records who was asked for and connects nowhere."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                line = conn.recv(4096).split(b'\r\n', 1)[0].decode('latin-1')
                parts = line.split()
                target = parts[1] if len(parts) > 1 else line
                self.hosts.append(target)
                conn.sendall(b'HTTP/1.1 403 Forbidden\r\n'
                             b'Content-Length: 0\r\n\r\n')
            except OSError:
                self.hosts.append('<unreadable request>')

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy():
    p = RecordingProxy()
    yield p
    p.close()


@pytest.fixture
def image_host(tmp_path):
    """The one host the extraction message names: serves image.png."""
    make_image(tmp_path / 'image.png', seed=3)
    body = (tmp_path / 'image.png').read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler, '127.0.0.1') as server:
        yield f'http://127.0.0.1:{server.server_address[1]}'


def test_a_worker_contacts_only_the_hosts_its_messages_name(
        app, start_worker, tmp_path, proxy, image_host):
    from PIL import Image

    from spacer_worker.extractors import EfficientNetExtractor
    from spacer_worker.extractors.runtime.calibration import (
        make_calibrated_weights,
    )
    from tests.storage.test_classifiers import train

    weights = tmp_path / 'efficientnet_b0_ver1.pt'
    sha = make_calibrated_weights(
        weights, images=[Image.open(tmp_path / 'image.png')], seed=0)
    model = tmp_path / 'model.pkl'
    model.write_bytes(dump_classifier(train('sgd')))
    features = tmp_path / 'img.featurevector'
    ImageFeatures.from_arrays([1, 2], [3, 4],
                              [[0.1] * 32, [0.2] * 32]).store(fs(features))
    proxies = {name: proxy.url for name in (
        'HTTPS_PROXY', 'HTTP_PROXY', 'ALL_PROXY',
        'https_proxy', 'http_proxy', 'all_proxy')}
    worker = start_worker('behind-proxy', queues='extract,classify', env={
        **proxies, 'NO_PROXY': '', 'no_proxy': '',
        'SPACER_EXTRACT_BACKEND': 'onnxruntime',
        'SPACER_FILESYSTEM_READ_ROOTS': str(tmp_path),
        'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp_path)})

    extract = ExtractFeaturesMsg(
        job_token='named', rowcols=[(20, 20), (40, 60)],
        extractor=EfficientNetExtractor(
            data_locations={'weights': fs(weights)},
            data_hashes={'weights': sha}),
        image_loc=DataLocation('url', f'{image_host}/image.png'),
        feature_loc=fs(tmp_path / 'out.featurevector'))
    ExtractFeaturesReturnMsg.deserialize(app.send_task(
        'spacer.extract_features', args=[extract.serialize()],
        queue='extract').get(timeout=TIMEOUT))
    out = ImageFeatures.load(fs(tmp_path / 'out.featurevector'))
    assert np.isfinite(np.asarray(out.point_features[0].data)).all()
    app.send_task('spacer.classify_features',
                  args=[classify_msg(features, model).serialize()],
                  queue='classify').get(timeout=TIMEOUT)

    # ONNX Runtime 1.32's 1DS uploads its first batch 5 to 25 s after it
    # starts (measured: nothing at 5 s, a CONNECT by 25 s), then on a
    # timer; then a stop as an operator does it.
    time.sleep(35)
    worker.stop()
    time.sleep(1)
    assert proxy.hosts == []
