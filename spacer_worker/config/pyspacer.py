"""PySpacer's ``spacer.config`` functions and module values, over our
settings table (:mod:`spacer_worker.config` re-exports them).

PySpacer computes its values at import; here each is computed when read,
so importing the package still reads no file and no setting.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable
from contextlib import ContextDecorator
from pathlib import Path
from typing import Any

from spacer_worker.config import settings
from spacer_worker.exceptions import ConfigError

logger = logging.getLogger('spacer_worker.config')

_NO_DEFAULT = 'NO_DEFAULT'

#: PySpacer's list of settings ``check()`` prints.
CONFIGURABLE_VARS = [
    'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN',
    'AWS_PROFILE_NAME', 'AWS_ANONYMOUS', 'AWS_REGION',
    'EXTRACTORS_CACHE_DIR', 'TEST_BUCKET', 'CN_TEST_EXTRACTORS_BUCKET',
    'CN_FIXTURES_BUCKET', 'LOG_DESTINATION', 'LOG_LEVEL', 'MAX_IMAGE_PIXELS',
    'MAX_POINTS_PER_IMAGE', 'TRAINING_BATCH_LABEL_COUNT',
]

APP_DIR = Path(__file__).resolve().parent.parent  # the package, as PySpacer's


def filter_warnings() -> None:
    """Silence boto's known spurious ResourceWarnings (as PySpacer does)."""
    warnings.filterwarnings('ignore', category=ResourceWarning,
                            message='unclosed.*<ssl.SSLSocket.*>')
    warnings.filterwarnings('ignore', category=ResourceWarning,
                            message='unclosed.*<_io.TextIOWrapper.*>')


def get_config_detection_result() -> str:
    found = 'found' if settings._secrets() else 'not found'
    django = 'found' if settings._django_settings() else 'not found'
    return f'Secrets file {found}. SPACER Django setting {django}.'


def _cast(key: str, value: Any, value_type: type) -> Any:
    if value_type is bool and isinstance(value, str):
        if value in ('True', 'False'):
            return value == 'True'
        raise ConfigError(f'{key} may only be True or False.')
    if value_type in (int, float) and isinstance(value, str):
        try:
            return value_type(value)
        except ValueError:
            raise ConfigError(f'{key} must be {value_type.__name__}, got '
                              f'{value!r}.') from None
    return value


def get_config_value(key: str, value_type: type = str,
                     default: Any = _NO_DEFAULT) -> Any:
    """A setting by PySpacer's rules: ``SPACER_<key>``, else secrets.json,
    else Django's ``settings.SPACER``; empty counts as unset; no default
    means required (ConfigError)."""
    def given(value: Any) -> bool:
        return value not in ('', None)

    value = os.getenv(settings.ENV_PREFIX + key)   # PySpacer reads getenv
    if given(value):
        return _cast(key, value, value_type)
    secrets = settings._secrets()
    if secrets is not None:
        value = secrets.get(key)
    else:
        value = (settings._django_settings() or {}).get(key)
    if given(value):
        return _cast(key, value, value_type)
    if default == _NO_DEFAULT:
        raise ConfigError(f'{key} setting is required. (Debug info: '
                          f'{get_config_detection_result()})')
    return default


class log_entry_and_exit(ContextDecorator):  # noqa: N801 - PySpacer's name
    """Debug-log entering and leaving a named step, with its duration."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start_time: float | None = None

    def __enter__(self) -> log_entry_and_exit:
        self.start_time = time.time()
        logger.debug('Entering: %s', self.name)
        return self

    def __exit__(self, *exc: Any) -> None:
        logger.debug('Exiting: %s after %f seconds.', self.name,
                     time.time() - (self.start_time or time.time()))


def check() -> None:
    """Print where settings come from and each of PySpacer's settings
    (secrets redacted)."""
    print(get_config_detection_result())
    for name in CONFIGURABLE_VARS:
        print(f'{name}: {settings.redact(name, settings.get(name))}')


#: Module values of ``spacer.config``, computed when read.
COMPUTED: dict[str, Callable[[], Any]] = {
    'APP_DIR': lambda: APP_DIR,
    'REPO_DIR': lambda: APP_DIR.parent,
    'SECRETS_PATH': lambda: settings.secrets_path() or APP_DIR.parent /
    'secrets.json',
    'SECRETS': lambda: settings._secrets(),
    'SETTINGS_FROM_DJANGO': lambda: settings._django_settings(),
    # PySpacer's test fixtures; scripts/pyspacer-conformance.py points it at
    # the copy of PySpacer's suite it runs here.
    'LOCAL_FIXTURE_DIR': lambda: os.environ.get(
        'SPACER_LOCAL_FIXTURE_DIR', str(APP_DIR / 'tests' / 'fixtures')),
    'HAS_CAFFE': lambda: importlib.util.find_spec('caffe') is not None,
}
