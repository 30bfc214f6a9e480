"""Settings, in one place: the typed table (:mod:`.settings`), PySpacer's
``spacer.config`` functions over it (:mod:`.pyspacer`), logging set-up
(:mod:`.logs`) and this process's task concurrency (:mod:`.pool`).

``config.get('NAME')`` reads one setting when called; ``config.NAME``
works as in PySpacer. Nothing is read at import.
"""

from __future__ import annotations

from typing import Any

from spacer_worker.config.pyspacer import (
    COMPUTED,
    CONFIGURABLE_VARS,
    check,
    filter_warnings,
    get_config_detection_result,
    get_config_value,
    log_entry_and_exit,
)
from spacer_worker.config.settings import (
    CLASSIFIER_TYPES,
    SETTINGS,
    STORAGE_TYPES,
    TASKS,
    TRAINER_NAMES,
    Setting,
    broker_url,
    describe,
    get,
    lookup,
    redact,
    register,
    reload,
    result_backend_url,
    secrets_path,
)
from spacer_worker.config.settings import (
    ENV_PREFIX as ENV_PREFIX,
)
from spacer_worker.config.settings import (
    _django_settings as _django_settings,  # read by tests: nothing read yet
)
from spacer_worker.config.settings import (
    _secrets as _secrets,
)
from spacer_worker.exceptions import ConfigError as ConfigError  # PySpacer's

__all__ = [
    'CLASSIFIER_TYPES', 'CONFIGURABLE_VARS', 'SETTINGS', 'STORAGE_TYPES',
    'TASKS', 'TRAINER_NAMES', 'Setting', 'broker_url', 'check', 'describe',
    'filter_warnings', 'get', 'get_config_detection_result',
    'get_config_value', 'log_entry_and_exit', 'lookup', 'redact',
    'register', 'reload', 'result_backend_url', 'secrets_path',
]

def __getattr__(name: str) -> Any:
    # PySpacer-style ``config.MAX_IMAGE_PIXELS``, read at access time.
    if name in SETTINGS:
        return get(name)
    if name in COMPUTED:
        return COMPUTED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
