"""The storage sandbox and the admission checks, in-process.

The same rules are exercised through a real worker in
tests/distributed/test_untrusted_messages.py; these tests pin the edges.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spacer_worker.data_classes import DataLocation
from spacer_worker.exceptions import (
    ConfigError,
    LocationNotAllowedError,
    MessageLimitError,
    ReadLimitError,
)
from spacer_worker.storage import load_bytes, store_bytes
from spacer_worker.storage.netguard import (
    HostGuard,
    HostNotAllowedError,
    is_public_address,
)
from spacer_worker.storage.sandbox import (
    S3Grant,
    Sandbox,
    current,
    in_context,
    untrusted,
)
from spacer_worker.worker.admission import admit, locations


def fs(path) -> DataLocation:
    return DataLocation('filesystem', str(path))


@pytest.fixture
def roots(tmp_path):
    dirs = {n: tmp_path / n for n in ('inputs', 'outputs', 'outside')}
    for d in dirs.values():
        d.mkdir()
    (dirs['inputs'] / 'a.bin').write_bytes(b'input')
    (dirs['outside'] / 'secret').write_bytes(b'secret')
    box = Sandbox(read_roots=(str(dirs['inputs']),),
                  write_roots=(str(dirs['outputs']),))
    return dirs, box


def test_no_sandbox_means_trusted_pyspacer_behaviour(roots):
    dirs, _ = roots
    assert current() is None
    assert load_bytes(fs(dirs['outside'] / 'secret')) == b'secret'


def test_unset_allowlists_refuse_and_name_the_setting(roots):
    dirs, _ = roots
    with untrusted(Sandbox()):
        with pytest.raises(LocationNotAllowedError,
                           match='SPACER_FILESYSTEM_READ_ROOTS'):
            load_bytes(fs(dirs['inputs'] / 'a.bin'))
        with pytest.raises(LocationNotAllowedError,
                           match='SPACER_FILESYSTEM_WRITE_ROOTS'):
            store_bytes(fs(dirs['outputs'] / 'b'), b'x')
        with pytest.raises(LocationNotAllowedError,
                           match='SPACER_S3_READ_BUCKETS'):
            load_bytes(DataLocation('s3', 'k', bucket_name='b'))


def test_settings_are_read_with_their_contract_names(roots, monkeypatch):
    dirs, _ = roots
    monkeypatch.setenv('SPACER_FILESYSTEM_READ_ROOTS',
                       f"{dirs['inputs']}:{dirs['outside']}")
    monkeypatch.setenv('SPACER_FILESYSTEM_WRITE_ROOTS', str(dirs['outputs']))
    monkeypatch.setenv('SPACER_S3_READ_BUCKETS', 'a, b/images')
    monkeypatch.setenv('SPACER_S3_WRITE_BUCKETS', 'c/out/')
    monkeypatch.setenv('SPACER_URL_ALLOWED_HOSTS', 'minio, 10.1.0.0/16')
    box = Sandbox.from_settings()
    assert box.read_roots == (str(dirs['inputs']), str(dirs['outside']))
    assert box.s3_read == (S3Grant('a'), S3Grant('b', 'images'))
    assert box.s3_write == (S3Grant('c', 'out/'),)
    assert box.hosts.hosts == {'minio'}
    monkeypatch.setenv('SPACER_FILESYSTEM_READ_ROOTS', 'relative/dir')
    with pytest.raises(ConfigError, match='absolute'):
        Sandbox.from_settings()


def test_reads_stay_under_the_roots_and_write_roots_are_readable(roots):
    dirs, box = roots
    (dirs['outputs'] / 'o.bin').write_bytes(b'output')
    with untrusted(box):
        assert load_bytes(fs(dirs['inputs'] / 'a.bin')) == b'input'
        assert load_bytes(fs(dirs['outputs'] / 'o.bin')) == b'output'
        for path in (dirs['outside'] / 'secret',
                     dirs['inputs'] / '..' / 'outside' / 'secret',
                     '/etc/passwd', '/dev/zero', '/proc/self/environ'):
            with pytest.raises(LocationNotAllowedError):
                load_bytes(fs(path))


def test_symlinks_out_of_a_root_are_not_followed(roots):
    dirs, box = roots
    (dirs['inputs'] / 'link').symlink_to(dirs['outside'] / 'secret')
    (dirs['inputs'] / 'dirlink').symlink_to(dirs['outside'])
    (dirs['inputs'] / 'inside').symlink_to(dirs['inputs'] / 'a.bin')
    (dirs['outputs'] / 'out-link').symlink_to(dirs['outside'] / 'new')
    with untrusted(box):
        with pytest.raises(LocationNotAllowedError):
            load_bytes(fs(dirs['inputs'] / 'link'))
        with pytest.raises(LocationNotAllowedError):
            load_bytes(fs(dirs['inputs'] / 'dirlink' / 'secret'))
        with pytest.raises(LocationNotAllowedError):
            store_bytes(fs(dirs['outputs'] / 'out-link'), b'x')
        # A link that stays inside the root is fine.
        assert load_bytes(fs(dirs['inputs'] / 'inside')) == b'input'
    assert not (dirs['outside'] / 'new').exists()


def test_only_regular_files_and_a_fifo_does_not_block(roots):
    dirs, box = roots
    os.mkfifo(dirs['inputs'] / 'fifo')
    started = time.monotonic()
    with untrusted(box), pytest.raises(LocationNotAllowedError,
                                       match='regular file'):
        load_bytes(fs(dirs['inputs'] / 'fifo'))
    assert time.monotonic() - started < 5


def test_writes_go_under_the_write_roots_only(roots):
    dirs, box = roots
    with untrusted(box):
        store_bytes(fs(dirs['outputs'] / 'new' / 'dir' / 'f'), b'ok')
        for path in (dirs['inputs'] / 'w', dirs['outside'] / 'w',
                     dirs['outputs'] / '..' / 'outside' / 'w'):
            with pytest.raises(LocationNotAllowedError):
                store_bytes(fs(path), b'x')
    assert (dirs['outputs'] / 'new' / 'dir' / 'f').read_bytes() == b'ok'
    assert sorted(p.name for p in dirs['outside'].iterdir()) == ['secret']


def test_s3_grants_are_buckets_or_folder_prefixes():
    grant = S3Grant.parse('spacer/features', 'S3_READ_BUCKETS')
    assert grant.covers('spacer', 'features/a.fv')
    assert not grant.covers('spacer', 'features-old/a.fv')
    assert not grant.covers('spacer', 'images/a.jpg')
    assert not grant.covers('other', 'features/a.fv')
    assert S3Grant('spacer').covers('spacer', 'anything/at/all')
    box = Sandbox(s3_read=(grant,))
    with pytest.raises(LocationNotAllowedError, match=r"'\.\.'"):
        box.check(DataLocation('s3', 'features/../images/a.jpg',
                               bucket_name='spacer'), 'read')
    with pytest.raises(LocationNotAllowedError, match='S3_WRITE_BUCKETS'):
        box.check(DataLocation('s3', 'features/a.fv', bucket_name='spacer'),
                  'write')


def test_memory_storage_needs_its_setting():
    loc = DataLocation('memory', 'k')
    with pytest.raises(LocationNotAllowedError,
                       match='SPACER_MEMORY_STORAGE_ALLOWED'):
        Sandbox().check(loc, 'read')
    assert Sandbox(memory=True).check(loc, 'read') == 'k'


def test_threads_inherit_the_sandbox_only_through_in_context(roots):
    dirs, box = roots
    secret = fs(dirs['outside'] / 'secret')
    with untrusted(box), ThreadPoolExecutor(2) as pool:
        guarded = [pool.submit(in_context(load_bytes), secret)
                   for _ in range(4)]
        for future in guarded:
            with pytest.raises(LocationNotAllowedError):
                future.result()


# --- read bounds -------------------------------------------------------------------

def test_file_size_is_checked_before_reading(roots, monkeypatch):
    dirs, box = roots
    monkeypatch.setenv('SPACER_FILESYSTEM_MAX_BYTES', '1000')
    with open(dirs['inputs'] / 'big', 'wb') as f:
        f.truncate(10**12)          # sparse: a terabyte that costs nothing
    with pytest.raises(ReadLimitError, match='FILESYSTEM_MAX_BYTES'):
        load_bytes(fs(dirs['inputs'] / 'big'))
    with untrusted(box), pytest.raises(ReadLimitError):
        load_bytes(fs(dirs['inputs'] / 'big'))


def test_dev_zero_fails_fast_even_for_a_trusted_caller(monkeypatch):
    monkeypatch.setenv('SPACER_FILESYSTEM_MAX_BYTES', str(1 << 20))
    started = time.monotonic()
    with pytest.raises(ReadLimitError):
        load_bytes(fs('/dev/zero'))
    assert time.monotonic() - started < 5


# --- admission ---------------------------------------------------------------------

def _extract(image, feature, rowcols=((1, 1),)):
    from spacer_worker.extractors import DummyExtractor
    from spacer_worker.messages import ExtractFeaturesMsg
    return ExtractFeaturesMsg(job_token='t', extractor=DummyExtractor(),
                              rowcols=list(rowcols), image_loc=image,
                              feature_loc=feature)


def test_an_output_may_not_be_an_input(roots):
    dirs, _ = roots
    box = Sandbox(write_roots=(str(dirs['outputs']),))
    image = dirs['outputs'] / 'img.png'
    with pytest.raises(LocationNotAllowedError, match='overwrite an input'):
        admit(_extract(fs(image), fs(dirs['outputs'] / 'x' / '..' /
                                     'img.png')), box)
    s3 = Sandbox(s3_write=(S3Grant('b'),))
    loc = DataLocation('s3', 'same', bucket_name='b')
    with pytest.raises(LocationNotAllowedError):
        admit(_extract(loc, loc), s3)
    admit(_extract(loc, DataLocation('s3', 'other', bucket_name='b')), s3)


def test_locations_sorts_reads_from_writes(roots):
    dirs, _ = roots
    msg = _extract(fs(dirs['inputs'] / 'i.png'), fs(dirs['outputs'] / 'f'))
    reads, writes = locations(msg)
    assert fs(dirs['inputs'] / 'i.png') in reads
    assert writes == [fs(dirs['outputs'] / 'f')]


def test_message_bounds(monkeypatch):
    from spacer_worker.messages import JobMsg
    monkeypatch.setenv('SPACER_MAX_TASKS_PER_JOB', '2')
    box = Sandbox(memory=True)
    task = _extract(DataLocation('memory', 'i'), DataLocation('memory', 'o'))
    admit(JobMsg(task_name='extract_features', tasks=[task, task]), box)
    with pytest.raises(MessageLimitError, match='MAX_TASKS_PER_JOB'):
        admit(JobMsg(task_name='extract_features', tasks=[task] * 3), box)


def test_message_limit_error_is_a_message_error_and_a_data_limit_error():
    from spacer_worker.exceptions import DataLimitError, MessageError
    assert issubclass(MessageLimitError, MessageError)
    assert issubclass(MessageLimitError, DataLimitError)


# --- URL guard ---------------------------------------------------------------------

@pytest.mark.parametrize('address, public', [
    ('8.8.8.8', True), ('2606:4700:4700::1111', True),
    ('127.0.0.1', False), ('10.1.2.3', False), ('172.16.0.1', False),
    ('192.168.1.1', False), ('169.254.169.254', False), ('100.64.0.1', False),
    ('0.0.0.0', False), ('224.0.0.1', False), ('240.0.0.1', False),
    ('255.255.255.255', False), ('::1', False), ('fe80::1', False),
    ('fd00:ec2::254', False), ('::ffff:127.0.0.1', False),
    ('2002:7f00:1::', False), ('ff02::1', False),
])
def test_only_public_addresses_pass_by_default(address, public):
    assert is_public_address(address) is public


def test_allowed_hosts_and_networks_may_be_private_but_never_metadata():
    guard = HostGuard.parse('minio, 10.0.0.0/8, 169.254.0.0/16')
    ip = ipaddress.ip_address
    assert guard.permits('minio', ip('172.18.0.5'))
    assert guard.permits('other', ip('10.9.8.7'))
    assert not guard.permits('other', ip('172.18.0.5'))
    assert not guard.permits('minio', ip('169.254.169.254'))
    assert not guard.permits('x', ip('169.254.169.254'))
    with pytest.raises(ConfigError, match='URL_ALLOWED_HOSTS'):
        HostGuard.parse('http://minio:9000/')


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    # DNS rebinding needs a DNS server that changes its answer; a resolver
    # standing in for one answers 127.0.0.1 once, then the metadata address.
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, '',
                      ('127.0.0.1', port))]])
    calls = []

    def resolver(host, port, *args, **kwargs):
        calls.append(host)
        try:
            return next(answers)
        except StopIteration:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, '',
                     ('169.254.169.254', port))]
    monkeypatch.setattr(socket, 'getaddrinfo', resolver)
    guard = HostGuard.parse('127.0.0.1/32')
    sock = guard.create_connection(('rebind.example', port), timeout=5)
    assert sock.getpeername() == ('127.0.0.1', port)
    peer, _ = listener.accept()     # completed in the backlog already
    peer.close()
    sock.close()
    assert calls == ['rebind.example']
    # and the next connection, answered with the other address, is refused.
    with pytest.raises(HostNotAllowedError, match='169.254.169.254'):
        guard.create_connection(('rebind.example', port), timeout=5)
    listener.close()


@pytest.fixture
def http_status_server():
    """127.0.0.1 server answering /503 with 503 and anything else 404."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(503 if self.path == '/503' else 404)
            self.send_header('Content-Length', '0')
            self.end_headers()

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    import threading
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_only_a_busy_allowed_server_stays_transient(http_status_server):
    from spacer_worker.exceptions import URLDownloadError, URLUnavailableError
    box = Sandbox(hosts=HostGuard.parse('127.0.0.1/32'))
    with untrusted(box):
        # 503 from an allowed host: retried like any transient error;
        with pytest.raises(URLUnavailableError):
            load_bytes(DataLocation('url', f'{http_status_server}/503'))
        # 404, refused, or not allowed: one permanent error, one text.
        texts = set()
        for url in (f'{http_status_server}/missing',
                    f'http://127.0.0.1:{_closed_port()}/x',
                    'http://169.254.169.254/latest/'):
            with pytest.raises(URLDownloadError) as info:
                load_bytes(DataLocation('url', url))
            assert not isinstance(info.value, URLUnavailableError)
            texts.add(str(info.value).replace(repr(url), '<url>'))
        assert len(texts) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
