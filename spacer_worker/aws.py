"""PySpacer's ``spacer.aws``: a boto3 session and S3 resource from the
spacer settings, and ``aws_check`` to see which credentials are in play.

Unlike PySpacer, the resource honours ``S3_ENDPOINT_URL`` (MinIO, moto...)
and S3_MAX_ATTEMPTS, as the S3 storage does. boto3 is imported when a
function is called, never at import.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from spacer_worker import config

__all__ = ['THREAD_LOCAL', 'aws_check', 'create_aws_resource',
           'create_aws_session', 'get_s3_resource']

logger = logging.getLogger(__name__)

#: One S3 resource per thread: boto3 resources are not thread-safe.
THREAD_LOCAL = threading.local()


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - depends on the install
        from spacer_worker.exceptions import ConfigError
        raise ConfigError(
            "spacer_worker.aws needs boto3: pip install boto3 (or "
            "'spacer_worker[worker]').") from e
    return boto3


def create_aws_session() -> Any:
    """A boto3 Session from the AWS_* settings (boto3's own precedence
    applies to whatever is left unset: instance role, config files...)."""
    return _boto3().Session(
        aws_access_key_id=config.get('AWS_ACCESS_KEY_ID'),
        aws_secret_access_key=config.get('AWS_SECRET_ACCESS_KEY'),
        aws_session_token=config.get('AWS_SESSION_TOKEN'),
        profile_name=config.get('AWS_PROFILE_NAME'),
    )


def create_aws_resource(service_name: str, region: str | None = None) -> Any:
    """A boto3 resource; unsigned when AWS_ANONYMOUS, at S3_ENDPOINT_URL
    for S3 when set."""
    import botocore
    from botocore.config import Config

    options: dict[str, Any] = {}
    if config.get('AWS_ANONYMOUS'):
        options['signature_version'] = botocore.UNSIGNED
    kwargs: dict[str, Any] = {}
    if service_name == 's3':
        options['retries'] = {
            'max_attempts': max(1, config.get('S3_MAX_ATTEMPTS')),
            'mode': 'standard'}
        endpoint = config.get('S3_ENDPOINT_URL')
        if endpoint:
            kwargs['endpoint_url'] = endpoint
    return create_aws_session().resource(
        service_name, region_name=region or config.get('AWS_REGION'),
        config=Config(**options) if options else None, **kwargs)


def get_s3_resource() -> Any:
    """This thread's S3 resource, made on first use and then reused."""
    if not hasattr(THREAD_LOCAL, 's3_resource'):
        resource = create_aws_resource('s3')
        THREAD_LOCAL.s3_resource = resource
        # PySpacer's words (its tests look for them), then the thread.
        logger.info('Called boto3.Session.resource() in get_s3_resource() '
                    '(thread %s)', threading.get_ident())
    return THREAD_LOCAL.s3_resource


def aws_check() -> None:
    """Print which AWS settings are set (yes/no, never their values), then
    make a session and print the identity AWS sees (STS GetCallerIdentity;
    its errors are raised as they come). Settings are read as module
    attributes, PySpacer's way, so a patched ``config.AWS_*`` counts."""
    if config.AWS_ANONYMOUS:
        print("AWS_ANONYMOUS has been set to True, so AWS will be accessed"
              " without credentials.")
        return
    print('Variables that have been set:')
    checks = [
        ('Spacer config - AWS_PROFILE_NAME (highest priority if specified)',
         config.AWS_PROFILE_NAME),
        ('Environment var - AWS_CONFIG_FILE', os.getenv('AWS_CONFIG_FILE')),
        ('Environment var - AWS_SHARED_CREDENTIALS_FILE',
         os.getenv('AWS_SHARED_CREDENTIALS_FILE')),
        ('Spacer config - AWS_ACCESS_KEY_ID', config.AWS_ACCESS_KEY_ID),
        ('Spacer config - AWS_SECRET_ACCESS_KEY', config.AWS_SECRET_ACCESS_KEY),
        ('Spacer config - AWS_SESSION_TOKEN', config.AWS_SESSION_TOKEN),
    ]
    if config.get('S3_ENDPOINT_URL'):
        checks.append(('Spacer config - S3_ENDPOINT_URL',
                       config.get('S3_ENDPOINT_URL')))
    for description, value in checks:
        print(f"{description}: {'Yes' if value else 'No'}")
    print('Will now call create_aws_session()...')
    session = create_aws_session()
    print('Will now call get_caller_identity()...')
    kwargs: dict[str, Any] = {}
    if config.get('S3_ENDPOINT_URL'):
        kwargs['endpoint_url'] = config.get('S3_ENDPOINT_URL')
    if config.get('AWS_REGION'):
        kwargs['region_name'] = config.get('AWS_REGION')
    identity = session.client('sts', **kwargs).get_caller_identity()
    print(f"Identified as ARN: {identity['Arn']}")
