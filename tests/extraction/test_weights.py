"""Weights: hash checks, the remote cache under concurrency, file formats."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    ConfigError,
    HashMismatchError,
    WeightsLoadError,
)
from spacer_worker.extractors import EfficientNetExtractor
from spacer_worker.extractors.runtime import engine, pt_writer
from spacer_worker.extractors.runtime import weights as weights_mod
from tests.extraction.conftest import needs_torch

POINTS = [(0, 0), (50, 60)]


def _url_extractor(url: str, sha256: str | None) -> EfficientNetExtractor:
    return EfficientNetExtractor(
        data_locations={'weights': DataLocation('url', url)},
        data_hashes={'weights': sha256} if sha256 else None)


def test_wrong_hash_on_local_weights_is_a_hash_mismatch(weights):
    # Given an extractor whose hash does not match its file,
    extractor = EfficientNetExtractor(
        data_locations={'weights': DataLocation('filesystem',
                                                str(weights.path))},
        data_hashes={'weights': '0' * 64})
    # then running it raises HashMismatchError naming both hashes.
    with pytest.raises(HashMismatchError, match=weights.sha256):
        extractor(Image.new('RGB', (64, 64)), POINTS)


def test_remote_weights_are_cached_and_reused(weights, file_server, tmp_path,
                                              monkeypatch):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('SPACER_EXTRACTORS_CACHE_DIR', str(cache))
    shutil.copy(weights.path, file_server.root / 'w.pt')
    extractor = _url_extractor(file_server.url('w.pt'), weights.sha256)
    image = Image.new('RGB', (64, 64), (10, 120, 200))
    # When a worker runs the extractor the first time, it downloads,
    _, first = extractor(image, POINTS)
    assert first.extractor_loaded_remotely is True
    cached = weights_mod.cache_path(
        DataLocation('url', file_server.url('w.pt')), weights.sha256)
    assert cached.parent.parent == cache
    assert cached.read_bytes() == weights.path.read_bytes()
    # and a fresh process (empty network cache) reads the cached copy.
    engine.clear_cache()
    _, second = extractor(image, POINTS)
    assert second.extractor_loaded_remotely is False
    assert file_server.gets('w.pt') == 1


def test_corrupt_cached_copy_is_evicted_and_fetched_again(
        weights, file_server, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    cache.mkdir()
    monkeypatch.setenv('SPACER_EXTRACTORS_CACHE_DIR', str(cache))
    shutil.copy(weights.path, file_server.root / 'w.pt')
    # Given a cached copy that was damaged on disk,
    cached = weights_mod.cache_path(
        DataLocation('url', file_server.url('w.pt')), weights.sha256)
    cached.parent.mkdir()
    cached.write_bytes(b'damaged')
    extractor = _url_extractor(file_server.url('w.pt'), weights.sha256)
    # when the extractor loads with its hash, it re-downloads the file.
    loaded = weights_mod.fetch(extractor)
    assert loaded.loaded_remotely is True
    assert loaded.sha256 == weights.sha256
    assert cached.read_bytes() == weights.path.read_bytes()


def test_remote_hash_mismatch_raises_and_caches_nothing(
        weights, file_server, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('SPACER_EXTRACTORS_CACHE_DIR', str(cache))
    (file_server.root / 'w.pt').write_bytes(b'not the weights you expect')
    cached = weights_mod.cache_path(
        DataLocation('url', file_server.url('w.pt')), weights.sha256)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b'stale copy with another hash')
    extractor = _url_extractor(file_server.url('w.pt'), weights.sha256)
    # When both the cached copy and the server's file fail the hash,
    with pytest.raises(HashMismatchError):
        weights_mod.fetch(extractor)
    # then the cached copy is evicted and the bad download not kept.
    assert list(cached.parent.iterdir()) == []


def test_cached_weights_serve_only_the_location_they_came_from(
        weights, file_server, tmp_path, monkeypatch):
    # Given a cache filled by a message naming one URL's efficientnet file,
    monkeypatch.setenv('SPACER_EXTRACTORS_CACHE_DIR', str(tmp_path / 'cache'))
    (file_server.root / 'evil').mkdir()
    (file_server.root / 'evil' / 'efficientnet_b0_ver1.pt').write_bytes(
        b'poisoned weights')
    shutil.copy(weights.path, file_server.root / 'efficientnet_b0_ver1.pt')
    poisoned = weights_mod.fetch(_url_extractor(
        file_server.url('evil/efficientnet_b0_ver1.pt'), None))
    assert poisoned.data == b'poisoned weights'
    # when a message without data_hashes names another location with the
    # same file name, its own bytes are fetched, not the cached ones,
    genuine = weights_mod.fetch(_url_extractor(
        file_server.url('efficientnet_b0_ver1.pt'), None))
    assert genuine.sha256 == weights.sha256
    assert genuine.loaded_remotely is True
    # and each location's copy is served to that location alone.
    again = weights_mod.fetch(_url_extractor(
        file_server.url('efficientnet_b0_ver1.pt'), None))
    assert (again.sha256, again.loaded_remotely) == (weights.sha256, False)


def test_remote_weights_need_a_cache_dir(weights, file_server):
    extractor = _url_extractor(file_server.url('w.pt'), None)
    with pytest.raises(ConfigError, match='EXTRACTORS_CACHE_DIR'):
        weights_mod.fetch(extractor)


def _fetch_in_child(url: str, sha256: str, cache: str, queue) -> None:
    import os
    os.environ['SPACER_EXTRACTORS_CACHE_DIR'] = cache
    from spacer_worker.extractors.runtime import weights as child_weights
    loaded = child_weights.fetch(_url_extractor(url, sha256))
    queue.put((loaded.sha256, loaded.loaded_remotely))


def test_processes_filling_the_cache_at_once_download_once(
        weights, file_server, tmp_path):
    # Given four worker processes that all start with an empty cache,
    cache = tmp_path / 'cache'
    shutil.copy(weights.path, file_server.root / 'w.pt')
    context = multiprocessing.get_context('spawn')
    queue = context.Queue()
    children = [context.Process(target=_fetch_in_child,
                                args=(file_server.url('w.pt'), weights.sha256,
                                      str(cache), queue))
                for _ in range(4)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    # then all read the right bytes, exactly one downloaded them, and the
    # cache holds one complete file.
    assert {sha for sha, _ in results} == {weights.sha256}
    assert sorted(remote for _, remote in results) == [False, False, False,
                                                       True]
    assert file_server.gets('w.pt') == 1
    [folder] = [d for d in cache.iterdir() if d.is_dir()]
    assert [p.read_bytes() for p in folder.iterdir()] == [
        weights.path.read_bytes()]


def test_data_parallel_prefixed_weights_give_the_same_features(
        weights, tmp_path):
    # Given CoralNet-1.0-style weights saved from DataParallel,
    torch = needs_torch()
    state = torch.load(weights.path, weights_only=True)['net']
    prefixed = tmp_path / 'prefixed.pt'
    torch.save({'net': {f'module.{k}': v for k, v in state.items()},
                'epoch': np.int64(30), 'acc': np.float64(0.5)}, prefixed)
    image = Image.new('RGB', (300, 200), (30, 90, 160))
    plain, _ = weights.extractor()(image, POINTS)
    extractor = EfficientNetExtractor(data_locations={
        'weights': DataLocation('filesystem', str(prefixed))})
    # then it loads with weights_only=True and extracts the same features.
    features, _ = extractor(image, POINTS)
    np.testing.assert_array_equal(features.feature_array(),
                                  plain.feature_array())


@pytest.mark.parametrize('content, message', [
    (b'this is not a torch file', 'not a PyTorch file'),
    ('other_dict', "must hold {'net': state_dict}"),
    ('wrong_shape', 'do not fit EfficientNet-b0'),
])
def test_unusable_weights_files_raise_weights_load_error(
        tmp_path, content, message):
    path = tmp_path / 'bad.pt'
    if content == 'other_dict':
        path.write_bytes(pt_writer.save({'model': {}}))
    elif content == 'wrong_shape':
        path.write_bytes(pt_writer.save(
            {'net': {'_fc.weight': np.zeros((10, 1280), np.float32)}}))
    else:
        path.write_bytes(content)
    extractor = EfficientNetExtractor(data_locations={
        'weights': DataLocation('filesystem', str(path))})
    with pytest.raises(WeightsLoadError, match=message):
        extractor(Image.new('RGB', (64, 64)), POINTS)


def test_pickled_code_in_weights_is_refused(tmp_path):
    # A weights file that would run code on load is rejected unloaded.
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    path = tmp_path / 'evil.pt'
    path.write_bytes(pt_writer.archive_bytes(
        pickle.dumps({'net': {}, 'x': Evil()}, protocol=2), {}))
    extractor = EfficientNetExtractor(data_locations={
        'weights': DataLocation('filesystem', str(path))})
    with pytest.raises(WeightsLoadError, match='weights_only'):
        extractor(Image.new('RGB', (64, 64)), POINTS)
