"""How many tasks this process's worker runs at once.

The worker records its concurrency when it starts, before its pool forks
(``worker.signals``), so every pool process knows how many tasks share the
machine's CPUs; ``training.threads`` divides them. Outside a worker it is 1.
Kept free of imports so that recording it loads nothing.
"""

from __future__ import annotations

_tasks_at_once = 1


def set_tasks_at_once(count: int) -> None:
    global _tasks_at_once
    _tasks_at_once = max(1, int(count))


def tasks_at_once() -> int:
    return _tasks_at_once
