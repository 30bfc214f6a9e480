#!/usr/bin/env python3
"""Container healthcheck: every Celery node this container runs answers a ping.

The entrypoint writes the node names it started to ``$WORKER_NODES_FILE``;
this script runs ``spacer-worker check --node NAME`` for each of them (the
broker is reachable and that node answers a ping) and exits 0 only when
every one did. A ping reaches a worker's main process, which answers while its
prefork children run tasks, so a long task does not make a worker unhealthy;
a hung main process, a lost broker connection or a dead node does.

A container that started no worker (Flower, a one-off command) has no nodes
file; there is nothing to check and the script says so and exits 0.
"""

from __future__ import annotations

import os
import sys


def _nodes(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return None


def main() -> int:
    path = os.environ.get('WORKER_NODES_FILE', '/tmp/spacer-worker/nodes')
    nodes = _nodes(path)
    if nodes is None:
        print(f'no Celery worker was started in this container ({path} is '
              'missing): nothing to check.')
        return 0
    if not nodes:
        print(f'unhealthy: {path} lists no worker node.')
        return 1
    timeout = float(os.environ.get('HEALTHCHECK_TIMEOUT', '10'))
    try:
        # The CLI's `spacer-worker check`: broker reachable, node answers.
        from spacer_worker.celery.health import check
        results = [check(node=node, timeout=timeout) for node in nodes]
    except Exception as e:  # any failure to ask is a failed check
        print(f'unhealthy: could not ping {", ".join(nodes)}: '
              f'{type(e).__name__}: {e}')
        return 1
    failed = [line for ok, lines in results if not ok for line in lines]
    if failed:
        print('unhealthy: ' + ' '.join(failed))
        return 1
    print(f'healthy: {", ".join(nodes)} answered.')
    return 0

if __name__ == '__main__':
    sys.exit(main())
