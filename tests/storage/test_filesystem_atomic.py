"""A writer killed at any point never leaves a partial file under the final
name: readers see the old content until the new one is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from spacer_worker.exceptions import InvalidLocationError
from spacer_worker.storage import FileSystemStorage

# The writer runs the real store() in a child process; one os function is
# made to freeze at the chosen point so the parent can kill it right there.
WRITER = textwrap.dedent('''
    import os, sys, time
    from spacer_worker.storage.filesystem import FileSystemStorage
    path, freeze_at = sys.argv[1], sys.argv[2]
    real = getattr(os, freeze_at)
    calls = []
    def frozen(*args, **kwargs):
        calls.append(1)
        if freeze_at == 'write' and len(calls) == 1:
            return real(*args, **kwargs)   # first chunk lands, then freeze
        print('frozen', flush=True)
        time.sleep(120)
    setattr(os, freeze_at, frozen)
    FileSystemStorage().store(path, b'N' * (3 << 20))
''')


@pytest.mark.parametrize('freeze_at', ['write', 'fsync', 'replace'],
                         ids=['mid-write', 'before-fsync', 'before-rename'])
def test_killed_writer_leaves_old_content_intact(tmp_path, freeze_at):
    target = tmp_path / 'features.npz'
    old = b'old content'
    FileSystemStorage().store(str(target), old)

    child = subprocess.Popen(
        [sys.executable, '-c', WRITER, str(target), freeze_at],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == 'frozen'
        # The new bytes are on disk, but only in a hidden temporary file.
        temps = [p for p in tmp_path.iterdir() if p.name != target.name]
        assert len(temps) == 1 and temps[0].name.startswith('.features.npz.')
        assert temps[0].stat().st_size > 0
        assert target.read_bytes() == old
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()

    assert child.returncode == -signal.SIGKILL
    assert FileSystemStorage().load(str(target)).getvalue() == old
    # The next (rerun) write succeeds and replaces the file whole.
    FileSystemStorage().store(str(target), b'new')
    assert target.read_bytes() == b'new'


def test_completed_write_is_whole_and_keeps_umask_permissions(tmp_path):
    target = tmp_path / 'sub' / 'dir' / 'model.pkl'
    data = os.urandom(3 << 20)
    FileSystemStorage().store(str(target), data)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ['model.pkl']
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_removes_its_temporary_file(tmp_path):
    directory = tmp_path / 'is-a-dir'
    directory.mkdir()
    # os.replace cannot put a file over a non-empty directory.
    (directory / 'inside').write_bytes(b'')
    with pytest.raises(InvalidLocationError, match='is-a-dir'):
        FileSystemStorage().store(str(directory), b'data')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['is-a-dir']
