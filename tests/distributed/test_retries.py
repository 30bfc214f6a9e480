"""Transient failures through a real worker: Celery's autoretry with
backoff, then PySpacer's answer once the retries are spent.

The transient fault is real: an HTTP server that answers 503 (URL storage's
URLUnavailableError, a TransientError) to the first requests for an image.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.extractors import DummyExtractor
from spacer_worker.messages import (
    ExtractFeaturesMsg,
    ExtractFeaturesReturnMsg,
    JobMsg,
    JobReturnMsg,
)
from tests.builders import ROWCOLS, fs, make_image

TIMEOUT = 20
RETRIES = '2'


class FlakyServer:
    """Serves one file; the first ``failures`` GETs get 503."""

    def __init__(self, body: bytes, failures: int) -> None:
        self.body, self.failures, self.gets = body, failures, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.gets += 1
                if server.gets <= server.failures:
                    self.send_response(503)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'image/png')
                self.send_header('Content-Length', str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self.http = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.http.server_port}/image.png'
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def flaky(data_dir) -> Iterator:
    servers: list[FlakyServer] = []

    def make(failures: int) -> FlakyServer:
        body = make_image(data_dir / 'image.png').read_bytes()
        servers.append(FlakyServer(body, failures))
        return servers[-1]
    yield make
    for server in servers:
        server.close()


@pytest.fixture
def retrying_worker(start_worker):
    # Two retries, at most 1 s apart: Celery's backoff with full jitter.
    return start_worker('retrying', queues='extract', env={
        'SPACER_TASK_MAX_RETRIES': RETRIES, 'SPACER_RETRY_BACKOFF_MAX': '1'})


def _extract(server: FlakyServer, data_dir) -> ExtractFeaturesMsg:
    return ExtractFeaturesMsg(
        job_token='flaky', extractor=DummyExtractor(feature_dim=4),
        rowcols=ROWCOLS, image_loc=DataLocation('url', server.url),
        feature_loc=fs(data_dir / 'flaky.featurevector'))


def test_a_transient_error_is_retried_until_the_task_succeeds(
        app, retrying_worker, flaky, data_dir):
    # Given an image URL that fails twice with 503, then serves the image
    server = flaky(failures=2)
    # When its extraction is sent
    result = app.send_task('spacer.extract_features',
                           args=[_extract(server, data_dir).serialize()],
                           queue='extract', task_id=str(uuid.uuid4()))
    # Then the worker retried twice and the third attempt succeeded
    ExtractFeaturesReturnMsg.deserialize(result.get(timeout=TIMEOUT))
    assert server.gets == 3
    assert (data_dir / 'flaky.featurevector').exists()


def test_spent_retries_fail_with_the_storage_error(app, retrying_worker,
                                                   flaky, data_dir):
    # Given an image URL that never recovers
    server = flaky(failures=1000)
    result = app.send_task('spacer.extract_features',
                           args=[_extract(server, data_dir).serialize()],
                           queue='extract', task_id=str(uuid.uuid4()))
    # Then the task fails, with the storage error's message, after the
    # first try and its two retries
    with pytest.raises(Exception, match='503'):
        result.get(timeout=TIMEOUT)
    assert server.gets == 1 + int(RETRIES)
    assert result.state == 'FAILURE'


def test_a_job_answers_ok_false_once_retries_are_spent(app, retrying_worker,
                                                       flaky, data_dir):
    # Given a job whose one image URL never recovers
    server = flaky(failures=1000)
    job = JobMsg(task_name='extract_features',
                 tasks=[_extract(server, data_dir)])
    result = app.send_task('spacer.process_job', args=[job.serialize()],
                           queue='extract', task_id=str(uuid.uuid4()))
    # Then, as PySpacer does, the job answers ok=False (not FAILURE), after
    # the retries, with the unavailable URL on the error's last line
    answer = JobReturnMsg.deserialize(result.get(timeout=TIMEOUT))
    assert server.gets == 1 + int(RETRIES)
    assert answer.ok is False
    last = answer.error_message.strip().splitlines()[-1]
    assert last.startswith('spacer.exceptions.URLDownloadError:')
