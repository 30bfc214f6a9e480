"""EXTRACT_SHARED_NETWORK through a real prefork Celery worker: its pool
processes cut patches, one server process runs the network for all of
them, and the features are the network's."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np

from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime.calibration import (
    make_calibrated_weights,
    synthetic_texture,
)
from spacer_worker.messages import ExtractFeaturesMsg, ExtractFeaturesReturnMsg
from tests.fidelity import bilevel_image, float64_features
from tests.services import wait_for

SETTINGS = {'SPACER_EXTRACT_BACKEND': 'torch', 'SPACER_TORCH_DEVICE': 'cpu',
            'SPACER_EXTRACT_BATCH_SIZE': '16', 'SPACER_EXTRACT_THREADS': '1'}


def _maps(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/maps').read_text()
    except OSError:          # gone meanwhile
        return ''


def _cmdline(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().replace(
            b'\0', b' ').decode()
    except OSError:
        return ''


def _calibrated_extractor(tmp_path: Path, monkeypatch,
                          seed: int) -> EfficientNetExtractor:
    """This process set up as the worker will be (SETTINGS), and an
    extractor for freshly calibrated weights with their hash."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    weights = tmp_path / 'weights.pt'
    sha = make_calibrated_weights(weights, seed=seed)
    return EfficientNetExtractor(
        data_locations={'weights': DataLocation('filesystem', str(weights))},
        data_hashes={'weights': sha})


def _message(token: str, extractor: EfficientNetExtractor, rowcols: list,
             image: Path, out: Path) -> ExtractFeaturesMsg:
    return ExtractFeaturesMsg(
        job_token=token, extractor=extractor, rowcols=rowcols,
        image_loc=DataLocation('filesystem', str(image)),
        feature_loc=DataLocation('filesystem', str(out)))


def test_pool_processes_share_one_network_process(app, start_worker,
                                                  tmp_path, monkeypatch):
    # Given calibrated weights, four images and their features as this
    # process's own network computes them,
    extractor = _calibrated_extractor(tmp_path, monkeypatch, seed=3)
    rng = np.random.default_rng(0)
    messages, expected = [], []
    for i in range(4):
        image = synthetic_texture(np.random.default_rng(i), 256).resize(
            (400, 300))
        path = tmp_path / f'image{i}.png'
        image.save(path)
        rowcols = [(int(rng.integers(300)), int(rng.integers(400)))
                   for _ in range(40)]
        expected.append(extractor(image, rowcols)[0].feature_array())
        messages.append(_message(f'image{i}', extractor, rowcols, path,
                                 tmp_path / f'image{i}.fv'))

    # when a two-process extraction worker with a shared network runs them,
    worker = start_worker('shared', queues='extract', concurrency=2,
                          env={**SETTINGS,
                               'SPACER_EXTRACT_SHARED_NETWORK': 'true'})
    results = [app.send_task('spacer.extract_features',
                             args=[m.serialize()], queue='extract',
                             task_id=str(uuid.uuid4())) for m in messages]
    for result in results:
        ExtractFeaturesReturnMsg.deserialize(result.get(timeout=180))

    # then every feature file holds that network's features,
    for message, want in zip(messages, expected, strict=True):
        features = ImageFeatures.load(message.feature_loc)
        np.testing.assert_allclose(features.feature_array(), want,
                                   rtol=0, atol=1e-4)
    # the network was built once, in the server, and no pool process (nor
    # the worker's main process) loaded torch at all.
    pids = worker.pids()
    servers = [p for p in pids
               if 'spacer_worker.extractors.runtime.shared' in _cmdline(p)]
    assert len(servers) == 1
    assert 'libtorch' in _maps(servers[0])
    others = [p for p in pids if p not in servers]
    assert len(others) == 3                  # the main process and its pool
    assert all('libtorch' not in _maps(p) for p in others)
    log = worker.log_text()
    assert log.count('Built EfficientNet-b0') == 1
    assert 'Shared extraction network server listening at' in log

    # When the worker stops, the server stops with it and says what it did.
    worker.stop()
    log = worker.log_text()
    assert 'Shared extraction network: 160 patches in' in log
    assert all(not Path(f'/proc/{p}').exists() for p in servers)


def test_a_task_whose_server_dies_is_retried_and_commits_once(
        app, start_worker, tmp_path, monkeypatch):
    # Given one image with enough points to keep the network busy for a
    # while, and its features as this process's own network computes them,
    extractor = _calibrated_extractor(tmp_path, monkeypatch, seed=4)
    image = synthetic_texture(np.random.default_rng(9), 256).resize((400, 300))
    path = tmp_path / 'image.png'
    image.save(path)
    rng = np.random.default_rng(1)
    rowcols = [(int(rng.integers(300)), int(rng.integers(400)))
               for _ in range(480)]
    expected = extractor(image, rowcols)[0].feature_array()
    message = _message('server-dies', extractor, rowcols, path,
                       tmp_path / 'image.fv')
    worker = start_worker('dying', queues='extract', concurrency=1,
                          env={**SETTINGS,
                               'SPACER_EXTRACT_SHARED_NETWORK': 'true',
                               'SPACER_TASK_MAX_RETRIES': '3',
                               'SPACER_RETRY_BACKOFF_MAX': '1'})

    def server_pids() -> list[int]:
        return [p for p in worker.pids()
                if 'spacer_worker.extractors.runtime.shared' in _cmdline(p)]

    # when its server process is killed while it runs the task's patches,
    task_id = str(uuid.uuid4())
    result = app.send_task('spacer.extract_features',
                           args=[message.serialize()], queue='extract',
                           task_id=task_id)
    deadline = time.monotonic() + 120
    while 'Built EfficientNet-b0' not in worker.log_text():
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.1)
    time.sleep(1.0)
    assert result.state != 'SUCCESS', 'the task ended before the kill'
    [killed] = server_pids()
    os.kill(killed, signal.SIGKILL)

    # then the task failed transiently, was retried on the restarted
    # server and succeeded once, with that network's features.
    ExtractFeaturesReturnMsg.deserialize(result.get(timeout=240))
    # Celery stores the result before it logs the success, so the result
    # can be here before that line is: wait for it, then count.
    succeeded = f'spacer.extract_features[{task_id}] succeeded'
    wait_for(lambda: succeeded in worker.log_text(), 30,
             what='the success line in the worker log')
    time.sleep(0.5)  # room for a second one, were there one
    log = worker.log_text()
    assert 'ExtractionServerError' in log
    assert 'Retry in' in log
    assert log.count(succeeded) == 1
    assert log.count('Built EfficientNet-b0') == 2
    assert killed not in server_pids() and len(server_pids()) == 1
    features = ImageFeatures.load(message.feature_loc)
    np.testing.assert_allclose(features.feature_array(), expected,
                               rtol=0, atol=1e-4)


def test_black_and_white_patches_get_float64_features_in_the_server(
        app, start_worker, tmp_path, monkeypatch):
    # Given a black-and-white image, where float32 features wander ~10
    # from float64 (exact.py), and its float64 features,
    extractor = _calibrated_extractor(tmp_path, monkeypatch, seed=5)
    image = bilevel_image()
    path = tmp_path / 'bilevel.png'
    image.save(path)
    rowcols = [(5, 7), (130, 60), (200, 240)]
    truth = float64_features(extractor.data_locations['weights'].key, image,
                             rowcols)
    message = _message('bilevel', extractor, rowcols, path, tmp_path / 'b.fv')

    # when a worker with a shared network extracts it,
    worker = start_worker('bilevel', queues='extract', concurrency=1,
                          env={**SETTINGS,
                               'SPACER_EXTRACT_SHARED_NETWORK': 'true'})
    result = app.send_task('spacer.extract_features',
                           args=[message.serialize()], queue='extract',
                           task_id=str(uuid.uuid4()))
    ExtractFeaturesReturnMsg.deserialize(result.get(timeout=180))

    # then the server recomputed them in float64, said so, and the file
    # holds the float64 features rounded to float32.
    assert 'patches recomputed in float64' in worker.log_text()
    stored = ImageFeatures.load(message.feature_loc).feature_array()
    assert np.abs(truth).max() > 1000
    assert np.abs(stored - truth).max() <= 1e-6 * np.abs(truth).max()
