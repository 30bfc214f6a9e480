"""The contract every writable backend keeps, run on each of them."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading

import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    DataNotFoundError,
    InvalidLocationError,
    PermanentError,
    StorageAccessDeniedError,
    StorageUnavailableError,
)
from spacer_worker.storage import (
    FileSystemStorage,
    MemoryStorage,
    default_memory_storage,
    load_bytes,
    storage_factory,
    store_bytes,
)
from spacer_worker.storage.errors import os_error
from spacer_worker.storage.s3 import S3Storage


@pytest.fixture(params=['filesystem', 'memory', 's3'])
def backend(request, tmp_path):
    """(storage, key prefix) for each writable backend."""
    if request.param == 'filesystem':
        return FileSystemStorage(), str(tmp_path) + '/'
    if request.param == 'memory':
        return MemoryStorage(), ''
    bucket = request.getfixturevalue('s3_bucket')
    return S3Storage(bucket), ''


def test_stored_bytes_load_back_unchanged(backend):
    storage, prefix = backend
    data = bytes(range(256)) * 10
    storage.store(prefix + 'dir/a.bin', data)
    assert storage.load(prefix + 'dir/a.bin').getvalue() == data
    assert storage.exists(prefix + 'dir/a.bin')


def test_store_replaces_previous_content(backend):
    storage, prefix = backend
    storage.store(prefix + 'k', b'old')
    storage.store(prefix + 'k', b'new')
    assert storage.load(prefix + 'k').getvalue() == b'new'


def test_missing_key_is_a_permanent_not_found_error(backend):
    storage, prefix = backend
    assert not storage.exists(prefix + 'nope')
    with pytest.raises(DataNotFoundError, match='nope') as info:
        storage.load(prefix + 'nope')
    assert isinstance(info.value, PermanentError)


def test_delete_removes_and_tolerates_missing_keys(backend):
    storage, prefix = backend
    storage.store(prefix + 'k', b'x')
    storage.delete(prefix + 'k')
    assert not storage.exists(prefix + 'k')
    storage.delete(prefix + 'k')  # deleting twice is fine (retries do)


def test_empty_object_round_trips(backend):
    storage, prefix = backend
    storage.store(prefix + 'empty', b'')
    assert storage.load(prefix + 'empty').getvalue() == b''


def test_helpers_resolve_data_locations(tmp_path, s3_bucket):
    for loc in (DataLocation('filesystem', str(tmp_path / 'x.bin')),
                DataLocation('memory', 'x.bin'),
                DataLocation('s3', 'x.bin', bucket_name=s3_bucket)):
        store_bytes(loc, b'payload')
        assert load_bytes(loc) == b'payload'


def test_memory_locations_use_the_process_default_instance():
    store_bytes(DataLocation('memory', 'shared-key'), b'v')
    assert default_memory_storage().load('shared-key').getvalue() == b'v'
    assert storage_factory('memory') is default_memory_storage()
    # A storage made by a test is its own world.
    assert not MemoryStorage().exists('shared-key')
    default_memory_storage().delete('shared-key')


def test_memory_storage_copies_what_it_stores():
    storage = MemoryStorage()
    buffer = bytearray(b'abc')
    storage.store('k', buffer)
    buffer[0] = ord('z')
    assert storage.load('k').getvalue() == b'abc'


def test_memory_storage_is_safe_across_threads():
    storage = MemoryStorage()

    def writer(n):
        for i in range(200):
            storage.store(f'{n}-{i}', bytes([n]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(storage.keys()) == 8 * 200


@pytest.mark.parametrize('storage_type, bucket, message', [
    ('ftp', None, "Unknown storage_type 'ftp'"),
    ('s3', None, 'needs a bucket_name'),
    ('s3', '', 'needs a bucket_name'),
])
def test_factory_rejects_bad_locations(storage_type, bucket, message):
    with pytest.raises(InvalidLocationError, match=message):
        storage_factory(storage_type, bucket)


def test_factory_accepts_the_storage_type_enum():
    loc = DataLocation('filesystem', 'x')
    assert isinstance(storage_factory(loc.storage_type), FileSystemStorage)


def test_filesystem_errors_are_typed(tmp_path):
    storage = FileSystemStorage()
    (tmp_path / 'adir').mkdir()
    with pytest.raises(InvalidLocationError, match='adir'):
        storage.load(str(tmp_path / 'adir'))
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if _can_write(locked):  # running as root: permissions do not bind
            pytest.skip('permissions are not enforced for this user')
        with pytest.raises(StorageAccessDeniedError, match='permission'):
            storage.store(str(locked / 'f'), b'x')
    finally:
        locked.chmod(0o700)


def _can_write(directory) -> bool:
    try:
        (directory / '.probe').write_bytes(b'')
    except PermissionError:
        return False
    (directory / '.probe').unlink()
    return True


def test_importing_storage_loads_no_heavy_library():
    code = ('import sys, spacer_worker.storage, '
            'spacer_worker.storage.filesystem, spacer_worker.storage.s3;'
            "print(sorted(m for m in ('boto3', 'botocore', 'PIL', 'numpy',"
            " 'sklearn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[]'


@pytest.mark.parametrize('error, expected', [
    (FileNotFoundError(errno.ENOENT, 'No such file'), DataNotFoundError),
    (PermissionError(errno.EACCES, 'Permission denied'),
     StorageAccessDeniedError),
    (OSError(errno.EROFS, 'Read-only file system'), InvalidLocationError),
    (OSError(errno.ENOSPC, 'No space left on device'),
     StorageUnavailableError),
    (OSError(errno.EIO, 'Input/output error'), StorageUnavailableError),
])
def test_disk_errors_split_into_permanent_and_transient(error, expected):
    # Faults a test cannot cause for real as root (or without a full disk).
    mapped = os_error(error, 'write', "file 'x'")
    assert type(mapped) is expected
    assert "file 'x'" in str(mapped)
