"""URL storage against a real local HTTP server that misbehaves on cue."""

from __future__ import annotations

import time

import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    DataLimitError,
    DataNotFoundError,
    PermanentError,
    StorageAccessDeniedError,
    StorageReadOnlyError,
    TransientError,
    URLAccessDeniedError,
    URLDownloadError,
    URLNotFoundError,
    URLTooLargeError,
    URLUnavailableError,
    URLUnusableError,
)
from spacer_worker.storage import load_bytes, storage_factory
from spacer_worker.storage.url import URLStorage

from .conftest import closed_port


def test_downloads_a_served_file(http_server, base_url):
    http_server.files['a.jpg'] = b'\xff\xd8 image bytes'
    url = f'{base_url}/files/a.jpg'
    assert load_bytes(DataLocation('url', url)) == b'\xff\xd8 image bytes'
    assert URLStorage().exists(url)


def test_missing_url_is_permanent_not_found(base_url):
    url = f'{base_url}/files/missing.jpg'
    with pytest.raises(URLNotFoundError, match='HTTP 404') as info:
        URLStorage().load(url)
    assert isinstance(info.value, DataNotFoundError)
    assert isinstance(info.value, PermanentError)
    assert not URLStorage().exists(url)


def test_forbidden_is_permanent_access_denied(base_url):
    with pytest.raises(URLAccessDeniedError, match='403') as info:
        URLStorage().load(f'{base_url}/forbidden')
    assert isinstance(info.value, StorageAccessDeniedError)


def test_other_client_errors_are_permanent(base_url):
    with pytest.raises(URLUnusableError, match='418'):
        URLStorage().load(f'{base_url}/teapot')


@pytest.mark.parametrize('route, status', [('unavailable', 503),
                                           ('throttled', 429)])
def test_5xx_and_throttling_are_transient(base_url, route, status):
    with pytest.raises(URLUnavailableError, match=str(status)) as info:
        URLStorage().load(f'{base_url}/{route}')
    assert isinstance(info.value, TransientError)
    assert isinstance(info.value, URLDownloadError)


def test_refused_connection_is_transient():
    with pytest.raises(URLUnavailableError, match='Retry later'):
        URLStorage().load(f'http://127.0.0.1:{closed_port()}/x.jpg')


def test_slow_server_times_out(base_url, monkeypatch):
    monkeypatch.setenv('SPACER_URL_TIMEOUT', '0.5')
    start = time.monotonic()
    with pytest.raises(URLUnavailableError, match='Timed out'):
        URLStorage().load(f'{base_url}/slow')
    assert time.monotonic() - start < 2.5


def test_trickling_download_hits_the_whole_download_timeout(base_url,
                                                            monkeypatch):
    monkeypatch.setenv('SPACER_URL_DOWNLOAD_TIMEOUT', '1')
    start = time.monotonic()
    with pytest.raises(URLUnavailableError, match='URL_DOWNLOAD_TIMEOUT'):
        URLStorage().load(f'{base_url}/trickle')
    assert time.monotonic() - start < 3


@pytest.mark.parametrize('route', ['drip-status', 'drip-headers'])
@pytest.mark.parametrize('method', ['load', 'exists'])
def test_dripped_status_line_or_headers_hit_the_download_deadline(
        base_url, monkeypatch, route, method):
    # Each byte comes well within URL_TIMEOUT, so only a deadline over
    # the status line and headers stops it.
    monkeypatch.setenv('SPACER_URL_DOWNLOAD_TIMEOUT', '1')
    start = time.monotonic()
    with pytest.raises(URLUnavailableError, match='URL_DOWNLOAD_TIMEOUT'):
        getattr(URLStorage(), method)(f'{base_url}/{route}')
    assert time.monotonic() - start < 4


def test_declared_size_over_limit_is_refused_before_reading(base_url,
                                                           monkeypatch):
    monkeypatch.setenv('SPACER_URL_MAX_BYTES', str(1 << 20))
    with pytest.raises(URLTooLargeError, match='Content-Length') as info:
        URLStorage().load(f'{base_url}/big-declared')
    assert isinstance(info.value, DataLimitError)


def test_undeclared_size_over_limit_stops_while_streaming(base_url,
                                                         monkeypatch):
    monkeypatch.setenv('SPACER_URL_MAX_BYTES', str(1 << 20))
    with pytest.raises(URLTooLargeError, match='stopped'):
        URLStorage().load(f'{base_url}/big-stream')
    # Within the limit the same stream downloads whole.
    monkeypatch.setenv('SPACER_URL_MAX_BYTES', str(8 << 20))
    assert len(URLStorage().load(f'{base_url}/big-stream').getvalue()) == 64 * 65536


def test_truncated_body_is_transient(base_url):
    with pytest.raises(URLUnavailableError, match='broke off'):
        URLStorage().load(f'{base_url}/truncated')


@pytest.mark.parametrize('url', ['file:///etc/passwd', 'ftp://host/x',
                                 'http://'])
def test_only_http_urls_are_accepted(url):
    with pytest.raises(URLUnusableError, match='only http'):
        URLStorage().load(url)
    assert URLStorage().exists(url) is False


def test_a_key_that_is_no_url_fails_in_pyspacers_words():
    with pytest.raises(URLUnusableError) as raised:
        URLStorage().load('not a url')
    assert str(raised.value) == (
        "Failed to download from the URL 'not a url'. / Details - "
        "ValueError: unknown url type: 'not a url'")
    assert URLStorage().exists('not a url') is False


def test_url_storage_is_read_only(base_url):
    storage = storage_factory('url')
    with pytest.raises(StorageReadOnlyError, match='read-only'):
        storage.store(f'{base_url}/files/x', b'data')
    with pytest.raises(StorageReadOnlyError, match='read-only'):
        storage.delete(f'{base_url}/files/x')


def test_redirects_are_followed_only_to_http(http_server, base_url):
    http_server.files['target'] = b'moved here'
    assert URLStorage().load(f'{base_url}/redirect?to=/files/target').getvalue() == (
        b'moved here')
    with pytest.raises(URLUnusableError, match='only http'):
        URLStorage().load(f'{base_url}/redirect?to=ftp://127.0.0.1/x')


def test_exists_falls_back_to_get_when_head_is_not_allowed(base_url):
    assert URLStorage().exists(f'{base_url}/no-head')
