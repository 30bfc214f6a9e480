"""S3 storage against real HTTP endpoints: moto's S3 server for the happy
path and missing objects, a fake S3 that answers errors, a closed port."""

from __future__ import annotations

import threading

import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    DataNotFoundError,
    InvalidLocationError,
    PermanentError,
    StorageAccessDeniedError,
    StorageUnavailableError,
    TransientError,
)
from spacer_worker.storage import load_bytes, store_bytes
from spacer_worker.storage import s3 as s3_module
from spacer_worker.storage.s3 import S3Storage
from tests.services import use_s3_endpoint

from .conftest import closed_port


def test_objects_round_trip_through_the_endpoint(s3_bucket):
    loc = DataLocation('s3', 'images/a.jpg', bucket_name=s3_bucket)
    store_bytes(loc, b'jpeg bytes')
    # The object is really in the bucket, as any S3 client sees it.
    body = s3_module.s3_client().get_object(
        Bucket=s3_bucket, Key='images/a.jpg')['Body'].read()
    assert body == b'jpeg bytes'
    assert load_bytes(loc) == b'jpeg bytes'


def test_missing_bucket_is_permanent_not_found(moto_endpoint, monkeypatch):
    use_s3_endpoint(monkeypatch, moto_endpoint)
    with pytest.raises(DataNotFoundError, match='NoSuchBucket'):
        S3Storage('no-such-bucket-here').load('k')
    assert not S3Storage('no-such-bucket-here').exists('k')


def test_missing_key_names_the_object(s3_bucket):
    with pytest.raises(DataNotFoundError,
                       match=f's3://{s3_bucket}/missing.npz'):
        S3Storage(s3_bucket).load('missing.npz')


def test_invalid_bucket_name_is_a_bad_location(moto_endpoint, monkeypatch):
    use_s3_endpoint(monkeypatch, moto_endpoint)
    with pytest.raises(InvalidLocationError, match='invalid bucket'):
        S3Storage('bad/bucket name').load('k')


def test_refused_connection_is_transient(monkeypatch):
    use_s3_endpoint(monkeypatch, f'http://127.0.0.1:{closed_port()}')
    with pytest.raises(StorageUnavailableError, match='unreachable') as info:
        S3Storage('bucket').load('k')
    assert isinstance(info.value, TransientError)


@pytest.mark.parametrize('status, code', [(503, 'SlowDown'),
                                          (500, 'InternalError'),
                                          (503, 'ServiceUnavailable')])
def test_throttling_and_server_errors_are_transient(fake_s3, status, code):
    fake_s3(status, code)
    for call in (lambda: S3Storage('b').load('k'),
                 lambda: S3Storage('b').store('k', b'x'),
                 lambda: S3Storage('b').exists('k')):
        with pytest.raises(StorageUnavailableError, match='retry later'):
            call()


def test_access_denied_is_permanent(fake_s3):
    fake_s3(403, 'AccessDenied')
    with pytest.raises(StorageAccessDeniedError, match='AccessDenied') as e:
        S3Storage('b').load('k')
    assert isinstance(e.value, PermanentError)
    # HEAD has no body: a bare 403 still reads as access denied.
    with pytest.raises(StorageAccessDeniedError):
        S3Storage('b').exists('k')


def test_client_is_cached_per_settings_and_shared_by_threads(
        moto_endpoint, monkeypatch):
    use_s3_endpoint(monkeypatch, moto_endpoint)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(
        s3_module.s3_client())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1
    # Other settings, other client: a changed endpoint is never ignored.
    monkeypatch.setenv('SPACER_AWS_REGION', 'eu-west-1')
    other = s3_module.s3_client()
    assert other is not seen[0]
    assert other.meta.region_name == 'eu-west-1'
    assert other.meta.endpoint_url == moto_endpoint


def test_anonymous_access_sends_unsigned_requests(s3_bucket, monkeypatch):
    import botocore
    s3_module.s3_client().put_object(Bucket=s3_bucket, Key='public.txt',
                                     Body=b'hi', ACL='public-read')
    S3Storage(s3_bucket).store('private.txt', b'secret')
    monkeypatch.setenv('SPACER_AWS_ANONYMOUS', 'true')
    client = s3_module.s3_client()
    assert client.meta.config.signature_version is botocore.UNSIGNED
    assert S3Storage(s3_bucket).load('public.txt').getvalue() == b'hi'
    with pytest.raises(StorageAccessDeniedError):
        S3Storage(s3_bucket).load('private.txt')


def test_an_object_over_s3_max_bytes_is_refused_from_its_size(
        s3_bucket, monkeypatch):
    from spacer_worker.exceptions import ReadLimitError
    loc = DataLocation('s3', 'features/big.fv', bucket_name=s3_bucket)
    store_bytes(loc, b'x' * 5000)
    monkeypatch.setenv('SPACER_S3_MAX_BYTES', '4096')
    with pytest.raises(ReadLimitError, match='5000 bytes.*S3_MAX_BYTES'):
        load_bytes(loc)
    monkeypatch.setenv('SPACER_S3_MAX_BYTES', '5000')
    assert load_bytes(loc) == b'x' * 5000


def test_the_s3_sandbox_reads_allowed_prefixes_through_the_endpoint(
        s3_bucket):
    from spacer_worker.exceptions import LocationNotAllowedError
    from spacer_worker.storage.sandbox import S3Grant, Sandbox, untrusted
    allowed = DataLocation('s3', 'features/a.fv', bucket_name=s3_bucket)
    other = DataLocation('s3', 'models/m.pkl', bucket_name=s3_bucket)
    store_bytes(allowed, b'feature bytes')
    store_bytes(other, b'model bytes')
    with untrusted(Sandbox(s3_write=(S3Grant(s3_bucket, 'features'),))):
        assert load_bytes(allowed) == b'feature bytes'
        store_bytes(DataLocation('s3', 'features/b.fv',
                                 bucket_name=s3_bucket), b'new')
        with pytest.raises(LocationNotAllowedError):
            load_bytes(other)
        with pytest.raises(LocationNotAllowedError):
            store_bytes(other, b'overwritten')
    assert load_bytes(other) == b'model bytes'


@pytest.mark.parametrize('key', ['../escaped.bin', '<tmp>/outside.bin',
                                 'a/../../escaped.bin'])
def test_a_filesystem_cache_keeps_every_key_inside_it(s3_bucket, tmp_path,
                                                      key):
    # PySpacer's RemoteStorage.load(key, filesystem_cache) joins the key to
    # the folder: '..' or a leading '/' would write outside it.
    key = key.replace('<tmp>', str(tmp_path))
    s3_module.s3_client().put_object(Bucket=s3_bucket, Key=key, Body=b'x')
    cache = tmp_path / 'cache'
    storage = S3Storage(s3_bucket)
    assert storage.load(key, filesystem_cache=str(cache)).read() == b'x'
    written = [p for p in tmp_path.rglob('*') if p.is_file()]
    assert written and all(cache in p.parents for p in written), written
    assert storage.load(key, filesystem_cache=str(cache)).read() == b'x'
