"""Redis's memory as the queue exporter reports it.

The broker runs ``maxmemory-policy noeviction`` (config/redis.conf): when
Redis is full it refuses writes with OOM errors, so submissions and results
fail, rather than silently dropping queued jobs. Operators need to see that
coming (used against max) and see it happen (OOM-rejected commands); an
eviction would mean the policy was changed and jobs may be gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int
    max_bytes: int          # 0: no maxmemory set
    evicted_keys: int
    oom_rejected: int       # commands refused with -OOM


def read_memory(redis: Any) -> RedisMemory:
    """INFO memory, stats and errorstats (Redis 6.2+; older servers report
    no error counts, read as 0)."""
    memory = redis.info('memory')
    stats = redis.info('stats')
    try:
        errors = redis.info('errorstats')
    except Exception:   # a server (or proxy) without the section
        errors = {}
    oom = errors.get('errorstat_OOM') or {}
    return RedisMemory(
        used_bytes=int(memory.get('used_memory', 0)),
        max_bytes=int(memory.get('maxmemory', 0)),
        evicted_keys=int(stats.get('evicted_keys', 0)),
        oom_rejected=int(oom.get('count', 0)) if isinstance(oom, dict) else 0)
