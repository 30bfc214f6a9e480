"""Amazon S3 and S3-compatible stores (MinIO, Ceph, moto) through boto3.

Settings (read when a client is first needed): S3_ENDPOINT_URL, AWS
credentials / profile / region / anonymous, S3_MAX_ATTEMPTS. Clients are
cached per process, keyed by those settings, and shared between threads
(boto3 clients are thread-safe; sessions are not, so each client gets its
own session, made under a lock).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from spacer_worker import config
from spacer_worker.exceptions import (
    ConfigError,
    DataNotFoundError,
    InvalidLocationError,
    ReadLimitError,
    SpacerError,
    StorageAccessDeniedError,
    StorageUnavailableError,
)
from spacer_worker.storage.base import as_bytes
from spacer_worker.storage.errors import http_status_is_transient
from spacer_worker.storage.remote import RemoteStorage

_NOT_FOUND = {'NoSuchKey', 'NoSuchBucket', 'NotFound', '404'}
_DENIED = {'AccessDenied', 'Forbidden', '403', 'InvalidAccessKeyId',
           'SignatureDoesNotMatch', 'AllAccessDisabled', 'AccountProblem',
           'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired'}
_TRANSIENT = {'SlowDown', 'Throttling', 'ThrottlingException',
              'RequestLimitExceeded', 'TooManyRequestsException',
              'RequestTimeout', 'RequestTimeoutException', 'InternalError',
              'ServiceUnavailable', 'OperationAborted'}

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def _settings_key() -> tuple:
    names = ('S3_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY',
             'AWS_SESSION_TOKEN', 'AWS_PROFILE_NAME', 'AWS_REGION',
             'AWS_ANONYMOUS', 'S3_MAX_ATTEMPTS', 'URL_TIMEOUT')
    # The pid keeps a forked worker from reusing its parent's connections.
    return (os.getpid(),) + tuple(config.get(n) for n in names)


def s3_client() -> Any:
    """The boto3 S3 client for the current settings, made once per process."""
    key = _settings_key()
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _make_client()
            _clients[key] = client
        return client


def _make_client() -> Any:
    try:  # lazy: boto3 stays off the client and off import time
        import boto3
        import botocore
        import botocore.exceptions
        from botocore.config import Config
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            "S3 storage needs boto3: pip install 'spacer_worker[worker]'."
        ) from e
    timeout = config.get('URL_TIMEOUT')
    options: dict[str, Any] = dict(
        retries={'max_attempts': max(1, config.get('S3_MAX_ATTEMPTS')),
                 'mode': 'standard'},
        connect_timeout=timeout, read_timeout=timeout)
    if config.get('AWS_ANONYMOUS'):
        options['signature_version'] = botocore.UNSIGNED
    try:
        session = boto3.session.Session(
            aws_access_key_id=config.get('AWS_ACCESS_KEY_ID'),
            aws_secret_access_key=config.get('AWS_SECRET_ACCESS_KEY'),
            aws_session_token=config.get('AWS_SESSION_TOKEN'),
            profile_name=config.get('AWS_PROFILE_NAME'),
        )
        return session.client(
            's3', region_name=config.get('AWS_REGION'),
            endpoint_url=config.get('S3_ENDPOINT_URL'),
            config=Config(**options))
    except botocore.exceptions.ProfileNotFound as e:
        raise ConfigError(
            f"AWS profile {config.get('AWS_PROFILE_NAME')!r} "
            f"(SPACER_AWS_PROFILE_NAME) is not in your AWS config: {e}") from e
    except ValueError as e:
        raise ConfigError(
            f"Bad S3 settings (SPACER_S3_ENDPOINT_URL="
            f"{config.get('S3_ENDPOINT_URL')!r}): {e}") from e


def clear_client_cache() -> None:
    with _clients_lock:
        _clients.clear()


class S3Storage(RemoteStorage):
    """Objects in one bucket."""

    def __init__(self, bucket_name: str) -> None:
        if not bucket_name or not isinstance(bucket_name, str):
            raise InvalidLocationError(
                f"S3 storage needs a bucket name, got {bucket_name!r}.")
        self.bucket_name = bucket_name

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket_name}/{key}"

    def _load_remote(self, key: str) -> bytes:
        limit = config.get('S3_MAX_BYTES')

        def get() -> bytes:
            response = s3_client().get_object(Bucket=self.bucket_name, Key=key)
            with response['Body'] as body:
                size = response.get('ContentLength')
                if isinstance(size, int) and size > limit:
                    raise ReadLimitError(
                        f"Could not read {self.describe(key)}: it is {size} "
                        f"bytes, over the S3_MAX_BYTES limit of {limit}.")
                data = body.read(limit + 1)
            if len(data) > limit:
                raise ReadLimitError(
                    f"Could not read {self.describe(key)}: stopped at the "
                    f"S3_MAX_BYTES limit of {limit} bytes.")
            return data
        return self._call(get, 'read', key)

    def store(self, key: str, stream: Any) -> None:
        # A PUT is atomic in S3: readers see the old or the new object.
        self._call(lambda: s3_client().put_object(
            Bucket=self.bucket_name, Key=key, Body=as_bytes(stream)), 'write',
            key)

    def move(self, source: str, key: str) -> None:
        # A server-side copy (atomic for readers of ``key``), then delete.
        self._call(lambda: s3_client().copy_object(
            Bucket=self.bucket_name, Key=key,
            CopySource={'Bucket': self.bucket_name, 'Key': source}),
            'move into place', source)
        self.delete(source)

    def delete(self, key: str) -> None:
        self._call(lambda: s3_client().delete_object(
            Bucket=self.bucket_name, Key=key), 'delete', key)

    def exists(self, key: str) -> bool:
        try:
            self._call(lambda: s3_client().head_object(
                Bucket=self.bucket_name, Key=key), 'check', key)
        except DataNotFoundError:
            # HEAD answers a bare 404 for a missing key and bucket alike.
            return False
        return True

    def _call(self, operation, action: str, key: str) -> Any:
        # Lazy: boto3 stays off the client and off import time until S3 is used.
        import botocore.exceptions as bce
        where = self.describe(key)
        try:
            return operation()
        except bce.ClientError as e:
            raise _client_error(e, action, where) from e
        except bce.ParamValidationError as e:
            raise InvalidLocationError(
                f"Could not {action} {where}: invalid bucket or key ({e})."
            ) from e
        except (bce.NoCredentialsError, bce.PartialCredentialsError) as e:
            raise ConfigError(
                f"Could not {action} {where}: no usable AWS credentials. Set "
                f"SPACER_AWS_ACCESS_KEY_ID/SPACER_AWS_SECRET_ACCESS_KEY, "
                f"SPACER_AWS_PROFILE_NAME, or SPACER_AWS_ANONYMOUS=true for "
                f"public buckets ({e}).") from e
        except (bce.EndpointConnectionError, bce.ConnectionError,
                bce.HTTPClientError, bce.IncompleteReadError,
                bce.ResponseStreamingError) as e:
            raise StorageUnavailableError(
                f"Could not {action} {where}: S3 endpoint "
                f"{config.get('S3_ENDPOINT_URL') or 'AWS'} unreachable or "
                f"the connection broke ({e}). Retry later.") from e
        except (TimeoutError, ConnectionError) as e:
            raise StorageUnavailableError(
                f"Could not {action} {where}: {e}. Retry later.") from e


def _client_error(e: Any, action: str, where: str) -> SpacerError:
    error = e.response.get('Error', {})
    code = str(error.get('Code', ''))
    status = int(e.response.get('ResponseMetadata', {})
                 .get('HTTPStatusCode') or 0)
    message = error.get('Message') or code or f'HTTP {status}'
    text = f"Could not {action} {where}: {code or status} ({message})"
    if code in _NOT_FOUND or status == 404:
        if code == 'NoSuchBucket':
            return DataNotFoundError(f"{text}: the bucket does not exist.")
        return DataNotFoundError(f"{text}.")
    if code in _DENIED or status in (401, 403):
        return StorageAccessDeniedError(
            f"{text}: check the AWS credentials and the bucket policy.")
    if code in _TRANSIENT or http_status_is_transient(status):
        return StorageUnavailableError(f"{text}. This may pass; retry later.")
    return InvalidLocationError(f"{text}.")

