"""The chaos benchmark's scenario, short: every fault once, a few kills.

``benchmarks/chaos.py`` with 40 jobs: real redis-server (AOF) and real
workers, kill -9 of busy workers' process groups every 6 s, a SIGSTOP
longer than the lease, a Redis restart, a collector crash inside
collect_jobs, a lease-less worker. It must report nothing lost, nothing
committed twice, nothing stuck, no partial output, and every fault
recovered. (The recovery time against 2 x LEASE_TTL + the task's duration
is the benchmark's figure, not asserted here: on a shared machine it
depends on the load.)
"""

from __future__ import annotations

import subprocess
import sys

from tests.services import REPO, base_env


def test_short_chaos_run_loses_nothing_and_commits_once(broker_url):
    env = base_env(broker_url)
    run = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'chaos.py'), '--jobs',
         '40', '--kill-every', '6', '--lease-ttl', '3', '--quick',
         '--timeout', '150'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    print(run.stdout[-3000:], run.stderr[-3000:])
    assert 'jobs               40 submitted, 40 collected' in run.stdout, \
        run.stdout[-3000:]
    assert 'not recovered' not in run.stdout
    for line in ('lost               0', 'committed twice    0',
                 'stuck past deadline 0', 'partial outputs    0'):
        assert line in run.stdout
