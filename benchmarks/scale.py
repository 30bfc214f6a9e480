#!/usr/bin/env python3
"""CoralNet's queue at scale: what a backlog of N jobs costs (issue 30).

For each size N (default 10^3, 10^4, 10^5), on a fresh redis-server
started here (no persistence, so fsync does not blur the figures):

1. enqueue N CoralNet extraction jobs (JobMsg, one 200-point
   ExtractFeaturesMsg with EfficientNet weights and S3 locations: 3.3 KB of
   JSON) through ``CeleryQueue``: the first ``--single`` one by one
   (``submit_job``), the rest with ``submit_jobs``; jobs/s of each, and
   Redis ``used_memory`` per queued job;
2. dispatch behind the backlog: round trip (send -> result in hand) of a
   trivial task through spacer_worker's task path to one real worker on
   another queue, p50/p99 (benchmarks/dispatch.py's echo task), while the
   N jobs wait;
3. collect cycles as CoralNet runs them (``get_collectable_jobs``, then
   ``collect_jobs`` by 100, each chunk's results dropped after use), each
   in a fresh Python process (its peak RSS is the web process's): with none
   finished, with 1% finished, then with all finished, cycle after cycle
   until every job is collected;
4. the longest Redis command over the whole run (``SLOWLOG``, threshold
   1 ms), and the commands Redis ran per job (``INFO commandstats``,
   those inside scripts included; no worker consumes the N jobs here).

"Finished" is written by the workers' own result path (the worker's result
backend class: the result record, then the mark in the queue's ``done``
set), with a JobReturnMsg as an extraction worker returns it; no model
runs, so the figures are the queue's alone. Prints a table, writes it as
JSON and plots it (matplotlib, PNG) under ``--out``.

    python3 benchmarks/scale.py                    # ~10 min on 2 cores
    python3 benchmarks/scale.py --sizes 1000 10000 # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from benchmarks.dispatch import Workers, latency, percentile, start_redis  # noqa: E402

PREFIX = 'spacer:coralnet:'
CHUNK = 5000             # jobs built and submitted at a time (bench memory)


def make_job(n: int):
    """CoralNet's extraction job for image n: 200 random points on a
    4000 x 3000 image, EfficientNet weights and features on S3."""
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.extractors import EfficientNetExtractor
    from spacer_worker.messages import ExtractFeaturesMsg, JobMsg

    rng = random.Random(n)
    extractor = EfficientNetExtractor(
        data_locations={'weights': DataLocation(
            's3', 'efficientnet_b0_ver1.pt', 'spacer-tools')},
        data_hashes={'weights': 'c3dc6d304179c6729c0a0b3d4e60c728bdcf0d82'
                                '687deeba54af71827467204c'})
    key = f'media/images/{n:010d}.jpg'
    return JobMsg(task_name='extract_features', tasks=[ExtractFeaturesMsg(
        job_token=str(n), extractor=extractor,
        rowcols=[(rng.randrange(3000), rng.randrange(4000))
                 for _ in range(200)],
        image_loc=DataLocation('s3', key, 'coralnet-production'),
        feature_loc=DataLocation('s3', key + '.featurevector',
                                 'coralnet-production'))])


def app_for(url: str):
    from spacer_worker.celery import create_app
    return create_app(set_as_current=False, broker_url=url,
                      result_backend=url)


def enqueue(queue, n: int, single: int) -> tuple[list[str], float, float]:
    """Task ids in job order; jobs/s one by one, and in bulk."""
    ids: list[str] = []
    single = min(single, n)
    jobs = [make_job(i) for i in range(single)]
    started = time.perf_counter()
    for i, job in enumerate(jobs):
        ids.append(queue.submit_job(job, i).id)
    single_rate = single / (time.perf_counter() - started) if single else 0
    bulk_time = 0.0
    for start in range(single, n, CHUNK):
        jobs = [(make_job(i), i) for i in range(start, min(n, start + CHUNK))]
        started = time.perf_counter()
        ids += [h.id for h in queue.submit_jobs(jobs)]
        bulk_time += time.perf_counter() - started
    bulk = n - single
    return ids, single_rate, (bulk / bulk_time if bulk else 0.0)


def finish(app, ids: list[str], numbers: range) -> None:
    """Store SUCCESS for jobs ``numbers`` as a worker does (result record,
    then the books' done mark)."""
    from celery.app.task import Context

    from spacer_worker.celery import books
    from spacer_worker.messages import ExtractFeaturesReturnMsg, JobReturnMsg
    from spacer_worker.worker.delivery import fenced_backend

    backend = fenced_backend(app)
    for i in numbers:
        result = JobReturnMsg(
            original_job=make_job(i), ok=True, error_message=None,
            results=[ExtractFeaturesReturnMsg(
                extractor_loaded_remotely=False, runtime=1.5)]).serialize()
        backend.store_result(ids[i], result, 'SUCCESS', request=Context(
            {'id': ids[i], books.HEADER: PREFIX}))


def cycles_in_child(url: str, mode: str) -> dict:
    """Run collect cycles in a fresh process; its timings and peak RSS."""
    run = subprocess.run(
        [sys.executable, str(Path(__file__)), '--child', url, mode],
        capture_output=True, text=True, cwd=REPO, env=child_env(url),
        timeout=3600)
    if run.returncode:
        raise RuntimeError(f'cycle process failed:\n{run.stderr[-3000:]}')
    return json.loads(run.stdout.strip().splitlines()[-1])


def child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')}
    env.update(SPACER_BROKER_URL=url, BENCH_BROKER_URL=url,
               SPACER_MEMORY_STORAGE_ALLOWED='true',
               PYTHONPATH=os.pathsep.join([str(REPO), str(BENCH)]))
    return env


def child(url: str, mode: str) -> None:
    """One CoralNet collector process: ``none`` runs 3 cycles (median),
    ``some`` one cycle, ``all`` cycles until nothing finished is left."""
    from spacer_worker.client.coralnet import CeleryQueue
    from spacer_worker.messages import JobReturnMsg  # noqa: F401 (warm)

    queue = CeleryQueue(app_for(url), prefix=PREFIX)
    times, listed, collected = [], [], []
    while True:
        started = time.perf_counter()
        jobs = queue.get_collectable_jobs()
        got = 0
        for start in range(0, len(jobs), 100):
            results, _ = queue.collect_jobs(jobs[start:start + 100])
            got += len(results)
            del results
        times.append(time.perf_counter() - started)
        listed.append(len(jobs))
        collected.append(got)
        del jobs
        if mode == 'none' and len(times) == 3:
            break
        if mode == 'some' or (mode == 'all' and got == 0):
            break
    queue.collect_jobs([])          # confirms what the last cycle returned
    print(json.dumps({'times': times, 'listed': listed,
                      'collected': collected, 'peak_rss_mb': peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss is kept across exec, so a
    child would report its parent's)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dispatch_behind(url: str, tmp: Path, n: int) -> tuple[float, float]:
    """p50/p99 ms of a trivial task's round trip with the backlog queued."""
    env = child_env(url)
    workers = Workers('spacer_worker', 'classify', 1, env, tmp, 'probe')
    app = app_for(url)
    payload = {'job_token': 'bench',
               'feature_loc': {'storage_type': 'memory', 'key': 'f',
                               'bucket_name': None},
               'classifier_loc': {'storage_type': 'memory', 'key': 'c',
                                  'bucket_name': None}}
    try:
        workers.wait_ready(app)
        times = latency(app, 'bench.spacer_echo', payload, 'classify', n,
                        warmup=30)
    finally:
        workers.stop()
    return percentile(times, 0.5), percentile(times, 0.99)


def measure(n: int, args: argparse.Namespace, tmp: Path) -> dict:
    import redis

    from spacer_worker.client.coralnet import CeleryQueue

    directory = tmp / f'redis-{n}'
    directory.mkdir()
    proc, url = start_redis(directory)
    if args.redis_nice:
        # On a machine shared with other work, a descheduled redis-server
        # shows up in SLOWLOG as a slow command; a dedicated host has none.
        subprocess.run(['renice', '-n', str(args.redis_nice), '-p',
                        str(proc.pid)], check=True, capture_output=True)
    r = redis.Redis.from_url(url)
    try:
        r.config_set('slowlog-log-slower-than', 1000)   # microseconds
        r.config_set('slowlog-max-len', 100000)
        r.config_resetstat()
        app = app_for(url)
        queue = CeleryQueue(app, prefix=PREFIX)
        base = r.info('memory')['used_memory']
        ids, single_rate, bulk_rate = enqueue(queue, n, args.single)
        per_job = (r.info('memory')['used_memory'] - base) / n
        print(f'  {n}: enqueued ({single_rate:.0f} jobs/s one by one, '
              f'{bulk_rate:.0f} jobs/s bulk), {per_job:.0f} B/job',
              flush=True)
        p50, p99 = dispatch_behind(url, tmp, args.dispatch_n)
        none = cycles_in_child(url, 'none')
        print(f'  {n}: none finished {statistics.median(none["times"]):.4f} '
              f's/cycle', flush=True)
        some_n = max(1, n // 100)
        finish(app, ids, range(some_n))
        some = cycles_in_child(url, 'some')
        finish(app, ids, range(some_n, n))
        everything = cycles_in_child(url, 'all')
        collected = some['collected'][0] + sum(everything['collected'])
        # Commands Redis ran (inside scripts too) for submit, dispatch
        # probe, finish marks and collection, per job.
        calls = sum(v['calls'] for k, v in r.info('commandstats').items()
                    if k not in ('cmdstat_slowlog', 'cmdstat_info'))
        slow = r.slowlog_get(100000)
        worst = max(slow, key=lambda e: e['duration'], default=None)
        left = r.hlen(PREFIX + 'info')
        return {
            'n': n, 'bytes_per_job': per_job,
            'submit_job_per_s': single_rate, 'submit_jobs_per_s': bulk_rate,
            'dispatch_p50_ms': p50, 'dispatch_p99_ms': p99,
            'cycle_none_s': statistics.median(none['times']),
            'cycle_none_listed': none['listed'][-1],
            'rss_none_mb': none['peak_rss_mb'],
            'cycle_1pct_s': some['times'][0],
            'cycle_1pct_collected': some['collected'][0],
            'rss_1pct_mb': some['peak_rss_mb'],
            'cycle_all_first_s': everything['times'][0],
            'cycle_all_first_collected': everything['collected'][0],
            'drain_all_s': sum(everything['times']),
            'drain_all_cycles': len(everything['times']) - 1,
            'rss_all_mb': everything['peak_rss_mb'],
            'collected': collected, 'left_on_books': left,
            'longest_ms': worst['duration'] / 1000 if worst else 0.0,
            'longest_command': _command(worst),
            'slowest_five': [(e['duration'] / 1000, _command(e)) for e in
                             sorted(slow, key=lambda e: -e['duration'])[:5]],
            'commands_over_10ms': sum(e['duration'] > 10_000 for e in slow),
            'slow_commands_over_1ms': len(slow),
            'redis_commands_per_job': calls / n,
        }
    finally:
        proc.terminate()
        proc.wait(10)


def _command(entry: dict | None) -> str:
    if entry is None:
        return '(none over 1 ms)'
    command = entry.get('command', b'')
    text = command.decode(errors='replace') if isinstance(command, bytes) \
        else str(command)
    words = text.split()
    if words and words[0].upper() in ('EVALSHA', 'EVAL'):
        # Name our scripts by a line of theirs.
        p = PREFIX
        for name, mark in (('CONFIRM', f'{p}info {p}msgs'),
                           ('HAND_OUT', f'{p}handed {p}msgs'),
                           ('RETURNED', f'{p}handed_at {p}returned'),
                           ('submission CLAIM', 'spacer:submit:'),
                           ('SWEEP', ' 0 celery-task-meta-'),
                           ('books mark', f'{p}info {p}done')):
            if mark in text:
                return f'{words[0]} {name}'
        return f'{words[0]} {text[:60]!r}'
    return ' '.join(words[:2])[:40]


def print_table(rows: list[dict]) -> None:
    head = ('N', 'B/job', 'submit_job/s', 'submit_jobs/s', 'cycle none s',
            '1% s', 'all: 1st cycle s (jobs)', 'drain s (cycles)',
            'peak RSS MB none/1%/all', 'longest cmd ms',
            'dispatch p50/p99 ms', 'Redis cmds/job')
    print(' | '.join(head))
    for r in rows:
        print(' | '.join([
            f"{r['n']:,}", f"{r['bytes_per_job']:.0f}",
            f"{r['submit_job_per_s']:.0f}", f"{r['submit_jobs_per_s']:.0f}",
            f"{r['cycle_none_s']:.4f}", f"{r['cycle_1pct_s']:.3f}",
            f"{r['cycle_all_first_s']:.2f} ({r['cycle_all_first_collected']:,})",
            f"{r['drain_all_s']:.1f} ({r['drain_all_cycles']})",
            f"{r['rss_none_mb']:.0f}/{r['rss_1pct_mb']:.0f}/"
            f"{r['rss_all_mb']:.0f}",
            f"{r['longest_ms']:.1f} {r['longest_command']} "
            f"({r['commands_over_10ms']} over 10 ms)",
            f"{r['dispatch_p50_ms']:.1f}/{r['dispatch_p99_ms']:.1f}",
            f"{r.get('redis_commands_per_job', 0):.0f}"]))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ns = [r['n'] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    ax.plot(ns, [r['cycle_none_s'] for r in rows], 'o-', label='none finished')
    ax.plot(ns, [r['cycle_1pct_s'] for r in rows], 's-', label='1% finished')
    ax.plot(ns, [r['cycle_all_first_s'] for r in rows], '^-',
            label='all finished (first cycle)')
    ax.axhline(0.05, color='grey', ls=':', label='0.05 s target (none)')
    ax.set(xscale='log', yscale='log', xlabel='outstanding jobs',
           ylabel='seconds', title='One collect cycle')
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for key, label in (('rss_none_mb', 'none'), ('rss_1pct_mb', '1%'),
                       ('rss_all_mb', 'all, every cycle')):
        ax.plot(ns, [r[key] for r in rows], 'o-', label=label)
    ax.set(xscale='log', xlabel='outstanding jobs', ylabel='MB',
           title='Collector peak RSS')
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(ns, [r['longest_ms'] for r in rows], 'o-',
            label='longest Redis command')
    ax.axhline(50, color='grey', ls=':', label='50 ms target')
    ax.set(xscale='log', xlabel='outstanding jobs', ylabel='ms',
           title='Longest Redis command (SLOWLOG)')
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(ns, [r['bytes_per_job'] / 1000 for r in rows], 'o-',
            label='Redis KB per queued job')
    ax.axhline(5, color='grey', ls=':', label='5 KB target')
    ax.set(xscale='log', xlabel='outstanding jobs', ylabel='KB',
           title='Redis memory per queued job', ylim=(0, 12))
    ax.legend(fontsize=8)
    fig.suptitle('CeleryQueue at scale (benchmarks/scale.py)')
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[1000, 10000, 100000])
    parser.add_argument('--single', type=int, default=1000,
                        help='jobs submitted one by one before the bulk')
    parser.add_argument('--dispatch-n', type=int, default=300)
    parser.add_argument('--redis-nice', type=int, default=0,
                        help='renice the redis-server (e.g. -10 on a '
                             'shared machine; needs the right to)')
    parser.add_argument('--out', type=Path, default=REPO / 'benchmarks' /
                        'out' / 'scale')
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='scale-bench-'))
    print(f'{os.cpu_count()} CPUs shared by the client, Redis and one worker; '
          f'logs in {tmp}', flush=True)
    rows = [measure(n, args, tmp) for n in args.sizes]
    print()
    print_table(rows)
    for r in rows:
        if r['collected'] != r['n'] or r['left_on_books']:
            print(f"N={r['n']}: {r['collected']} collected of {r['n']}, "
                  f"{r['left_on_books']} left on the books")
    (args.out / 'scale.json').write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / 'scale.png')
    print(f"\nwrote {args.out / 'scale.json'} and {args.out / 'scale.png'}")


if __name__ == '__main__':
    main()
