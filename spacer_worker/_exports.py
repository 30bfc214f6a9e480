"""Names a module re-exports the way PySpacer's modules do, resolved on
first access so that importing the module stays light (no torch, numpy or
boto3 until the name is used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


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
