"""Python 3.10 support for the client side (CoralNet's web servers run
3.10): what the standard library gained in 3.11."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised by the Python 3.10 client venv
    class StrEnum(str, Enum):
        """A str whose members compare and print as their values."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)

__all__ = ['StrEnum']
