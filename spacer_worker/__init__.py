"""spacer_worker: PySpacer's jobs as a distributed Celery service.

Importing the package has no side effects: no settings are read, no
network is built, no Celery app is created until asked for. The layout is
drawn in docs/internals.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = '0.1.0'

__all__ = ['__version__']


# Modules with PySpacer's names re-export what PySpacer's modules do; the
# names are resolved on first access so that importing the module stays
# light (no torch, numpy or boto3 until the name is used).
def lazy_exports(module: str, table: dict[str, str], namespace: dict
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``module``; ``table`` maps a
    public name to ``'package.module:attribute'``."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(
                f'module {module!r} has no attribute {name!r}')
        source, _, attribute = target.partition(':')
        value = getattr(importlib.import_module(source), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
