"""Sorting low-level failures into permanent and transient errors.

Shared by the backends: an ``OSError`` from the local disk or a socket is
classified by its errno; HTTP statuses are classified the same way for S3
and URLs.
"""

from __future__ import annotations

import errno
import socket

from spacer_worker.exceptions import (
    DataNotFoundError,
    InvalidLocationError,
    SpacerError,
    StorageAccessDeniedError,
    StorageUnavailableError,
)

#: errnos that say the location itself is wrong (retrying cannot help).
_BAD_LOCATION = {errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG,
                 errno.EINVAL, errno.ELOOP, errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def os_error(exc: OSError, action: str, where: str) -> SpacerError:
    """Map an OSError raised while ``action``-ing ``where`` to our tree.

    Missing files, permissions and malformed paths are permanent; anything
    else (disk full, I/O error, stale NFS handle, resets) may pass.
    """
    detail = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return DataNotFoundError(f"Could not {action} {where}: no such file.")
    if isinstance(exc, PermissionError) or exc.errno in _DENIED:
        return StorageAccessDeniedError(
            f"Could not {action} {where}: permission denied ({detail}).")
    if exc.errno in _BAD_LOCATION:
        return InvalidLocationError(
            f"Could not {action} {where}: {detail}.")
    return StorageUnavailableError(
        f"Could not {action} {where}: {detail}. This may pass; retry later.")


def is_permanent_dns_error(exc: BaseException) -> bool:
    """The host name does not exist (as opposed to DNS being unreachable)."""
    return isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME


def http_status_is_transient(status: int) -> bool:
    """5xx, 429 Too Many Requests and 408 Request Timeout may pass."""
    return status >= 500 or status in (408, 429)
