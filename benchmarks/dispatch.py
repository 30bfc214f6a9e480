"""Dispatch overhead: spacer_worker's task path against bare Celery.

Everything runs in one invocation on the same redis-server (started here in
a temp dir unless --broker is given), so the two sides see the same
machine load:

1. latency: round trip (send -> result in hand) of a trivial task, one at
   a time, p50/p99, through bare Celery (a one-line task, Celery defaults)
   and through spacer_worker's app and task path (SpacerTask adapter:
   payload decoded into a ClassifyFeaturesMsg, result serialized, with the
   app's reliability settings: late acks, prefetch 1, STARTED state,
   events, leases). Target: ours adds at most 1 ms at p50.
2. throughput: tasks/s of the same tasks with N worker processes.
3. load: 10,000 real ``spacer.classify_features`` tasks over 2 worker
   processes; every result is checked (none lost) and every run counted
   (none ran twice).

Run:

    python3 benchmarks/dispatch.py                  # ~2 minutes on 2 cores
    python3 benchmarks/dispatch.py --quick          # smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    import redis
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which('redis-server') or '/usr/bin/redis-server',
         '--port', str(port), '--bind', '127.0.0.1', '--dir', str(directory),
         '--save', '', '--appendonly', 'no'],
        stdout=subprocess.DEVNULL, start_new_session=True)
    url = f'redis://127.0.0.1:{port}/0'
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError('redis-server did not start')


class Workers:
    """N worker processes (-c 1 each), each in its own process group."""

    def __init__(self, app: str, queues: str, n: int, env: dict,
                 log_dir: Path, name: str) -> None:
        self.procs = []
        self.logs = []
        for i in range(n):
            log = log_dir / f'{name}{i}.log'
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, '-m', 'celery', '-A', app, 'worker',
                 '-Q', queues, '-c', '1', '-n', f'{name}{i}@%h', '-l',
                 'warning', '--without-mingle', '--without-gossip',
                 '-I', 'dispatch_tasks'],
                cwd=REPO, env=env, stdout=open(log, 'wb'),
                stderr=subprocess.STDOUT, start_new_session=True))

    def wait_ready(self, app, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            if len(replies) >= len(self.procs):
                return
            for p, log in zip(self.procs, self.logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f'worker exited: {log.read_text()}')
        raise RuntimeError('workers not ready')

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(app, task: str, payload: dict, queue: str, n: int,
            warmup: int = 50) -> list[float]:
    times = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        app.send_task(task, args=[payload], queue=queue).get(timeout=30)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return times


def collect(app, ids: list[str], timeout: float) -> dict[str, dict]:
    """Final metas of all ids, polled in bulk (MGET of 1000 at a time)."""
    backend = app.backend
    pending = list(ids)
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for i in range(0, len(pending), 1000):
            chunk = pending[i:i + 1000]
            raws = backend.client.mget(
                [backend.get_key_for_task(t) for t in chunk])
            for task_id, raw in zip(chunk, raws, strict=True):
                meta = raw and backend.decode(raw)
                if meta and meta['status'] in ('SUCCESS', 'FAILURE'):
                    done[task_id] = meta
                else:
                    still.append(task_id)
        pending = still
        if pending:
            time.sleep(0.2)
    return done


def throughput(app, task: str, payload: dict, queue: str, n: int) -> float:
    t0 = time.perf_counter()
    ids = [app.send_task(task, args=[payload], queue=queue).id
           for _ in range(n)]
    done = collect(app, ids, timeout=300)
    elapsed = time.perf_counter() - t0
    if len(done) != n:
        raise RuntimeError(f'{n - len(done)} results missing')
    return n / elapsed


def make_classify_data(directory: Path, files: int) -> list[dict]:
    """Feature files and a small LR classifier for classify_features."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import SGDClassifier

    from spacer_worker.data_classes import DataLocation, ImageFeatures
    from spacer_worker.messages import ClassifyFeaturesMsg
    from spacer_worker.storage import store_classifier

    rng = np.random.default_rng(0)
    dim = 32
    x = rng.normal(size=(300, dim))
    y = (x[:, 0] > 0).astype(int) + 1
    base = SGDClassifier(loss='log_loss', random_state=0).fit(x[:200], y[:200])
    # PySpacer's shape: a prefit classifier calibrated on held-out data.
    clf = CalibratedClassifierCV(base, cv='prefit').fit(x[200:], y[200:])
    model = DataLocation('filesystem', str(directory / 'model.pkl'))
    store_classifier(model, clf)
    payloads = []
    for i in range(files):
        loc = DataLocation('filesystem', str(directory / f'f{i}.featurevector'))
        ImageFeatures.from_arrays(
            list(range(10)), list(range(10)),
            rng.normal(size=(10, dim)).astype(np.float32)).store(loc)
        payloads.append(ClassifyFeaturesMsg(
            job_token=f'f{i}', feature_loc=loc, classifier_loc=model
        ).serialize())
    return payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--broker', help='Redis URL (default: start one)')
    parser.add_argument('--latency-n', type=int, default=1000)
    parser.add_argument('--throughput-n', type=int, default=3000)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--load-n', type=int, default=10000)
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    if args.quick:
        args.latency_n, args.throughput_n, args.load_n = 200, 500, 1000

    from celery import Celery

    from spacer_worker.celery import create_app

    tmp = Path(tempfile.mkdtemp(prefix='dispatch-bench-'))
    redis_proc = None
    url = args.broker
    if url is None:
        redis_proc, url = start_redis(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')}
    # The echo payloads name memory locations (nothing is read): the
    # workers' admission refuses those from the broker unless allowed.
    env.update(SPACER_BROKER_URL=url, BENCH_BROKER_URL=url,
               SPACER_MEMORY_STORAGE_ALLOWED='true',
               PYTHONPATH=os.pathsep.join([str(REPO), str(BENCH)]))

    bare = Celery('bare-client', broker=url, backend=url, set_as_current=False)
    bare.conf.update(task_serializer='json', result_serializer='json',
                     accept_content=['json'])
    ours = create_app(set_as_current=False, broker_url=url, result_backend=url)
    echo_payload = {'job_token': 'bench',
                    'feature_loc': {'storage_type': 'memory', 'key': 'f',
                                    'bucket_name': None},
                    'classifier_loc': {'storage_type': 'memory', 'key': 'c',
                                       'bucket_name': None}}
    print(f'Redis {url}; {os.cpu_count()} CPUs; client, workers and Redis '
          f'share them.\n')
    try:
        sides = (('bare Celery', bare, 'bare.echo', 'celery'),
                 ('bare task, our app', ours, 'bench.plain_echo', 'classify'),
                 ('spacer_worker', ours, 'bench.spacer_echo', 'classify'))
        # Both sides' workers run at once and the measurements alternate
        # (one round trip, or one batch, per side in turn), so load from
        # other processes on the machine hits every side alike.
        one = [Workers('bare_celery', 'celery', 1, env, tmp, 'lat-bare'),
               Workers('spacer_worker', 'classify', 1, env, tmp, 'lat-ours')]
        one[0].wait_ready(bare)
        one[1].wait_ready(ours)
        lat: dict[str, list[float]] = {side[0]: [] for side in sides}
        for i in range(50 + args.latency_n):
            for label, client, task, queue in sides:
                t = latency(client, task, echo_payload, queue, 1, warmup=0)
                if i >= 50:
                    lat[label] += t
        for w in one:
            w.stop()
        many = [Workers('bare_celery', 'celery', args.workers, env, tmp,
                        'tp-bare'),
                Workers('spacer_worker', 'classify', args.workers, env, tmp,
                        'tp-ours')]
        many[0].wait_ready(bare)
        many[1].wait_ready(ours)
        rates: dict[str, list[float]] = {side[0]: [] for side in sides}
        batch = max(100, args.throughput_n // 3)
        for _ in range(3):
            for label, client, task, queue in sides:
                rates[label].append(
                    throughput(client, task, echo_payload, queue, batch))
        for w in many:
            w.stop()
        rows = [(label, percentile(lat[label], 0.5),
                 percentile(lat[label], 0.99), statistics.mean(lat[label]),
                 statistics.median(rates[label])) for label, *_ in sides]

        print(f'{"trivial task":<20}{"p50 ms":>9}{"p99 ms":>9}{"mean ms":>9}'
              f'{"tasks/s":>9}   ({args.latency_n} round trips each; '
              f'median of 3 batches of {batch} over {args.workers} '
              f'workers)')
        for label, p50, p99, mean, rate in rows:
            print(f'{label:<20}{p50:>9.2f}{p99:>9.2f}{mean:>9.2f}{rate:>9.0f}')
        settings_cost = rows[1][1] - rows[0][1]
        path_cost = rows[2][1] - rows[1][1]
        total = rows[2][1] - rows[0][1]
        print(f'p50 added over bare Celery: {total:+.2f} ms in all = '
              f'{settings_cost:+.2f} ms reliability settings (late acks, '
              f'prefetch 1, STARTED, events, leases) '
              f'{path_cost:+.2f} ms task path (decode, message class, '
              f'result encode).')
        print(f'target: task path <= 1 ms at p50: '
              f'{"met" if path_cost <= 1.0 else "MISSED"}; throughput '
              f'{rows[2][4] / rows[0][4]:.2f}x bare Celery\n')

        # Load: real classify_features, 2 workers, every result accounted.
        import redis
        counter = redis.Redis.from_url(url)
        counter.delete('bench:runs')
        payloads = make_classify_data(tmp, 20)
        # The feature files and classifier lie in tmp: the workers may read
        # there (a broker message reads only under the read roots).
        load_env = dict(env, BENCH_COUNT_RUNS=url,
                        SPACER_FILESYSTEM_READ_ROOTS=str(tmp))
        workers = Workers('spacer_worker', 'classify', 2, load_env, tmp,
                          'load')
        workers.wait_ready(ours)
        t0 = time.perf_counter()
        ids = [str(uuid.uuid4()) for _ in range(args.load_n)]
        for i, task_id in enumerate(ids):
            ours.send_task('spacer.classify_features',
                           args=[payloads[i % len(payloads)]],
                           queue='classify', task_id=task_id)
        sent = time.perf_counter() - t0
        done = collect(ours, ids, timeout=600)
        elapsed = time.perf_counter() - t0
        time.sleep(1)   # let the last run counts land
        counts = {k.decode(): int(v) for k, v in
                  counter.hgetall('bench:runs').items()}
        workers.stop()
        ok = sum(1 for m in done.values() if m['status'] == 'SUCCESS'
                 and len(m['result']['scores']) == 10)
        lost = len(ids) - len(done)
        failed = len(done) - ok
        twice = sum(1 for t in ids if counts.get(t, 0) > 1)
        never = sum(1 for t in ids if counts.get(t, 0) == 0)
        print(f'load: {args.load_n} spacer.classify_features over 2 workers: '
              f'{elapsed:.1f} s ({args.load_n / elapsed:.0f} tasks/s; '
              f'sending took {sent:.1f} s)')
        print(f'  results: {ok} correct, {failed} failed, {lost} lost; '
              f'runs: {twice} ran twice, {never} never ran -> '
              f'{"all accounted for" if ok == args.load_n and not twice else "PROBLEM"}')
    finally:
        if redis_proc is not None:
            os.killpg(redis_proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
