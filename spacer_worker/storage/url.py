"""Read-only downloads over HTTP(S).

Bounded in every direction so a bad URL cannot hang or flood a worker:
URL_TIMEOUT for connecting and for each read, URL_DOWNLOAD_TIMEOUT for the
whole download (connect, status line, headers and body: see
:mod:`spacer_worker.storage.deadline`), URL_MAX_BYTES checked against Content-Length before reading and
again while streaming. Failures are URLDownloadError subclasses, split into
permanent (404, 403, too large, bad URL) and transient (timeouts, resets,
5xx, 429).
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from spacer_worker import config
from spacer_worker.exceptions import (
    StorageReadOnlyError,
    URLAccessDeniedError,
    URLNotFoundError,
    URLTooLargeError,
    URLUnavailableError,
    URLUnusableError,
)
from spacer_worker.storage.deadline import Deadline
from spacer_worker.storage.errors import (
    http_status_is_transient,
    is_permanent_dns_error,
)
from spacer_worker.storage.netguard import connection_handlers, guarded_handlers
from spacer_worker.storage.remote import RemoteStorage

if TYPE_CHECKING:
    from spacer_worker.storage.netguard import HostGuard

_CHUNK = 1 << 16
_USER_AGENT = 'spacer_worker'


class URLStorage(RemoteStorage):
    """Keys are http:// or https:// URLs."""

    writable = False

    def __init__(self, guard: HostGuard | None = None) -> None:
        # With a guard (broker messages), every connection, redirects
        # included, goes only to an address the guard checked.
        self.guard = guard

    def describe(self, key: str) -> str:
        return f"URL {key!r}"

    def _load_remote(self, key: str) -> bytes:
        with Deadline(config.get('URL_DOWNLOAD_TIMEOUT')) as deadline:
            try:
                data = self._download(key, deadline)
            except Exception as e:
                if deadline.expired:
                    raise _too_slow(key) from e
                raise
            if deadline.expired:    # cut short: what came may be partial
                raise _too_slow(key)
            return data

    def _download(self, key: str, deadline: Deadline) -> bytes:
        limit = config.get('URL_MAX_BYTES')
        with self._open(key, 'GET', deadline) as response:
            declared = response.headers.get('Content-Length')
            expected = _parse_length(declared)
            if expected is not None and expected > limit:
                raise URLTooLargeError(
                    f"Download from {key!r} refused: it is {expected} bytes "
                    f"(Content-Length), over the URL_MAX_BYTES limit of "
                    f"{limit}.")
            chunks: list[bytes] = []
            total = 0
            while True:
                try:
                    # read1: whatever has arrived, so the deadline is checked
                    # between small reads, not after one huge blocking read.
                    chunk = response.read1(_CHUNK)
                except http.client.IncompleteRead as e:
                    raise URLUnavailableError(
                        f"Download from {key!r} broke off after "
                        f"{total + len(e.partial)} bytes ({e}). Retry later."
                    ) from e
                except OSError as e:
                    _raise_network(e, key, 'reading')
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise URLTooLargeError(
                        f"Download from {key!r} stopped: over the "
                        f"URL_MAX_BYTES limit of {limit} bytes.")
                if deadline.expired:
                    raise _too_slow(key)
                chunks.append(chunk)
        if expected is not None and total != expected:
            raise URLUnavailableError(
                f"Download from {key!r} broke off: got {total} of "
                f"{expected} bytes. Retry later.")
        return b''.join(chunks)

    def exists(self, url: str) -> bool:
        if not _is_http(url):
            return False    # PySpacer's answer for what it cannot open
        with Deadline(config.get('URL_DOWNLOAD_TIMEOUT')) as deadline:
            try:
                return self._exists(url, deadline)
            except Exception as e:
                if deadline.expired:
                    raise _too_slow(url) from e
                raise

    def _exists(self, url: str, deadline: Deadline) -> bool:
        try:
            with self._open(url, 'HEAD', deadline):
                return not deadline.expired or _raise(_too_slow(url))
        except URLNotFoundError:
            return False
        except URLUnusableError as e:
            if getattr(e, 'status', None) not in (405, 501):
                raise
        # The server does not do HEAD: start a GET and drop the body.
        try:
            with self._open(url, 'GET', deadline):
                return not deadline.expired or _raise(_too_slow(url))
        except URLNotFoundError:
            return False

    def store(self, url: str, stream: Any) -> None:
        raise StorageReadOnlyError(
            f"Cannot write to {url!r}: url storage is read-only; store to "
            f"filesystem, s3 or memory instead.")

    def delete(self, url: str) -> None:
        raise StorageReadOnlyError(
            f"Cannot delete {url!r}: url storage is read-only.")

    def _open(self, url: str, method: str, deadline: Deadline
              ) -> http.client.HTTPResponse:
        if not urlsplit(url).scheme:
            # What PySpacer (urllib) says of a key that is no URL at all.
            raise URLUnusableError(
                f"Failed to download from the URL '{url}'. / Details - "
                f"ValueError: unknown url type: '{url}'")
        if not _is_http(url):
            raise URLUnusableError(
                f"Cannot download {url!r}: only http:// and https:// URLs "
                f"are supported.")
        request = urllib.request.Request(
            url, method=method, headers={'User-Agent': _USER_AGENT})
        try:
            return _opener(self.guard, deadline).open(
                request, timeout=config.get('URL_TIMEOUT'))
        except urllib.error.HTTPError as e:
            e.close()
            _raise_status(e.code, e.reason, url)
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, OSError):
                _raise_network(reason, url, 'connecting to')
            raise URLUnusableError(
                f"Cannot download {url!r}: {reason}.") from e
        except http.client.HTTPException as e:
            raise URLUnavailableError(
                f"Download from {url!r} failed: the server sent a broken "
                f"response ({type(e).__name__}: {e}). Retry later.") from e
        except OSError as e:
            _raise_network(e, url, 'connecting to')
        except ValueError as e:
            raise URLUnusableError(f"Cannot download {url!r}: {e}.") from e


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect to ftp://; only http(s) is allowed.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme not in ('http', 'https'):
            raise URLUnusableError(
                f"Download from {req.full_url!r} redirected to {newurl!r}; "
                f"only http:// and https:// are followed.")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ('http', 'https') and bool(parts.netloc)


def _opener(guard: HostGuard | None, deadline: Deadline
            ) -> urllib.request.OpenerDirector:
    # Every connection, redirects and proxies included, under the deadline.
    if guard is None:
        return urllib.request.build_opener(
            _HTTPOnlyRedirects, *connection_handlers(deadline.connector()))
    return urllib.request.build_opener(
        _HTTPOnlyRedirects, *guarded_handlers(guard, deadline.connector))


def _too_slow(url: str) -> URLUnavailableError:
    return URLUnavailableError(
        f"Download from {url!r} took longer than URL_DOWNLOAD_TIMEOUT "
        f"({config.get('URL_DOWNLOAD_TIMEOUT')} s), counted from the "
        f"connect through the status line, headers and body. Retry later.")


def _raise(error: Exception) -> NoReturn:
    raise error


def _parse_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _raise_status(status: int, reason: object, url: str) -> NoReturn:
    text = f"Download from {url!r} failed: HTTP {status} {reason}"
    if status in (404, 410):
        raise URLNotFoundError(f"{text}; check the URL.")
    if status in (401, 403):
        raise URLAccessDeniedError(
            f"{text}; the server refuses access (expired signed URL?).")
    if http_status_is_transient(status):
        raise URLUnavailableError(f"{text}. This may pass; retry later.")
    error = URLUnusableError(f"{text}.")
    error.status = status
    raise error


def _raise_network(exc: OSError, url: str, doing: str) -> NoReturn:
    if isinstance(exc, ssl.SSLCertVerificationError):
        raise URLUnusableError(
            f"Refused {url!r}: its TLS certificate does not verify "
            f"({exc.verify_message}).") from exc
    if isinstance(exc, TimeoutError):
        raise URLUnavailableError(
            f"Timed out {doing} {url!r} after URL_TIMEOUT="
            f"{config.get('URL_TIMEOUT')} s. Retry later.") from exc
    if is_permanent_dns_error(exc):
        raise URLUnusableError(
            f"Cannot download {url!r}: its host name does not resolve "
            f"({exc}).") from exc
    # Refused, reset, unreachable network, TLS hiccups: may pass.
    raise URLUnavailableError(
        f"Network error {doing} {url!r}: {exc}. Retry later.") from exc
