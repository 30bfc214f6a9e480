"""Local (or network-mounted) disk, with atomic writes.

A write goes to a hidden temporary file in the destination directory, is
flushed to disk with fsync, then renamed over the final name with
``os.replace``. Renames within one directory are atomic on POSIX, so a
reader sees either the old file or the new one, never a partial write, even
when the writer is killed. After a crash a hidden ``.<name>.<random>.tmp``
file may remain beside the destination; it is never read.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import (
    LocationNotAllowedError,
    ReadLimitError,
    SpacerError,
)
from spacer_worker.storage.base import Storage, as_bytes
from spacer_worker.storage.errors import os_error

_CHUNK = 1 << 20


class FileSystemStorage(Storage):
    """Keys are paths (absolute, or relative to the working directory)."""

    def describe(self, key: str) -> str:
        return f"file {key!r}"

    def load_bytes(self, key: str) -> bytes:
        return read_file(key, self.describe(key))

    def store(self, key: str, stream: Any) -> None:
        data = as_bytes(stream)
        path = os.path.abspath(key)
        directory, name = os.path.split(path)
        where = self.describe(key)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise os_error(e, 'create the directory for', where) from e
        temp = os.path.join(directory, f'.{name}.{uuid.uuid4().hex[:12]}.tmp')
        try:
            # 0o666 so the umask applies as for a plain open().
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError as e:
            _remove_quietly(temp)
            raise os_error(e, 'write', where) from e
        except BaseException:
            _remove_quietly(temp)
            raise
        _fsync_directory(directory)

    def move(self, source: str, key: str) -> None:
        # Staged files sit beside their destination: one atomic rename.
        try:
            os.replace(source, key)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise os_error(e, 'move into place', self.describe(key)) from e
        _fsync_directory(os.path.dirname(os.path.abspath(key)))

    def delete(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise os_error(e, 'delete', self.describe(path)) from e

    def exists(self, path: str) -> bool:
        return os.path.isfile(path)


def read_file(path: str, where: str, *, strict: bool = False) -> bytes:
    """The bytes of ``path``, at most FILESYSTEM_MAX_BYTES of them.

    The size of a regular file is checked before reading; anything else
    (a pipe, /dev/zero) is cut off at the limit. ``strict`` (broker
    messages) also refuses a symbolic link as the last component and any
    file that is not a regular file, without blocking on a FIFO.
    """
    limit = config.get('FILESYSTEM_MAX_BYTES')
    flags = os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0)
    if strict:
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if strict and e.errno == errno.ELOOP:
            raise LocationNotAllowedError(
                f"Could not read {where}: it is a symbolic link.") from e
        raise os_error(e, 'read', where) from e
    try:
        info = os.fstat(fd)
        if strict and not stat.S_ISREG(info.st_mode):
            raise LocationNotAllowedError(
                f"Could not read {where}: not a regular file.")
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise ReadLimitError(
                f"Could not read {where}: it is {info.st_size} bytes, over "
                f"the FILESYSTEM_MAX_BYTES limit of {limit}.")
        if strict:
            os.set_blocking(fd, True)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ReadLimitError(
                    f"Could not read {where}: stopped at the "
                    f"FILESYSTEM_MAX_BYTES limit of {limit} bytes.")
        return b''.join(chunks)
    except SpacerError:
        raise           # ours are OSErrors too (PermissionError...)
    except OSError as e:
        raise os_error(e, 'read', where) from e
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data).cast('B')
    while view:
        written = os.write(fd, view[:_CHUNK])
        view = view[written:]


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


