"""Chaos benchmark: no job lost, none committed twice, none stuck, under faults.

Starts a real redis-server (AOF, fsync every second, as config/redis.conf)
and real ``celery worker`` processes: ``--workers`` leased workers plus one
lease-less worker (LEASE_TTL=0, as an older version or another app on the
same Redis). Submits ``--jobs`` mixed CoralNet jobs through
``CeleryQueue.submit_job`` (extraction of small images, small trainings,
classification of stored features), collects them with ``collect_jobs``
like CoralNet's periodic task, in small batches (``--collect-batch``
finished jobs and ``--sweep-batch`` waiting ones a cycle), and meanwhile:

* kills (-9) the whole process group of a random leased worker every
  ``--kill-every`` seconds, and starts a fresh one;
* stops (SIGSTOP) one leased worker for 2.5 x LEASE_TTL, then SIGCONT;
* restarts Redis once (SIGTERM, AOF kept);
* aborts one collect_jobs call in the middle (after it handed results
  out, before it returned), as a collector crash;
* keeps the lease-less worker running throughout.

Prints jobs lost (collected as DROPPED, or never answered), jobs committed
more than once (``chaos:commits``, counted under the fence by the tasks
themselves), jobs stuck past their deadline, partial outputs (a succeeded
job whose feature file or model does not load), and the slowest recovery:
from a kill or stop until every task the victim held was committed
elsewhere, against the bound 2 x LEASE_TTL + the task's own duration.

    python benchmarks/chaos.py                      # 500 jobs, ~3-5 min
    python benchmarks/chaos.py --jobs 60 --kill-every 6 --quick
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services import (  # noqa: E402
    RedisServer,
    base_env,
    kill_group,
)


class Worker:
    def __init__(self, name: str, env: dict, log_dir: Path,
                 concurrency: int = 2) -> None:
        # Two slots per worker: a requeued task finds a free slot instead
        # of waiting behind a busy worker's task (the recovery then shows
        # the leases, not the queue).
        self.concurrency = concurrency
        self.name = name
        self.env = {**env, 'CHAOS_WORKER': name}
        self.log = open(log_dir / f'{name}.log', 'ab')
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'celery', '-A', 'spacer_worker', 'worker',
             '-Q', 'extract,train,classify', '-c', str(self.concurrency), '-n',
             f'{self.name}@%h', '-l', 'info', '--without-mingle',
             '--without-gossip', '-I', 'benchmarks.chaos_hooks'],
            cwd=REPO, env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            kill_group(self.proc, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.signal(signal.SIGKILL)


@dataclass
class Event:
    what: str
    at: float
    held: set = field(default_factory=set)     # task ids the victim held
    recovered_at: float | None = None
    bound: float = 0.0


def held_task_ids(broker: redis.Redis, worker_name: str) -> set[str]:
    """Task ids of the messages a worker's lease owns right now."""
    ids = set()
    for key in broker.scan_iter(f'spacer:held:{worker_name}@*'):
        for tag in broker.smembers(key):
            raw = broker.hget('unacked', tag)
            if raw is None:
                continue
            try:
                payload = json.loads(raw)[0]
                if isinstance(payload, (str, bytes)):
                    payload = json.loads(payload)
                ids.add(payload['headers']['id'])
            except (ValueError, KeyError, TypeError, IndexError):
                pass
    return ids


def pick_victim(rng: random.Random, broker: redis.Redis,
                workers: list[Worker]) -> tuple[Worker, set[str]]:
    """A random worker among those running a task (a fault on an idle
    worker shows nothing), else any; with the task ids it holds."""
    for _ in range(20):
        try:
            busy = [(w, held_task_ids(broker, w.name)) for w in workers]
        except redis.RedisError:
            busy = []
        busy = [(w, held) for w, held in busy if held]
        if busy:
            return rng.choice(busy)
        time.sleep(0.1)
    return rng.choice(workers), set()


def make_jobs(data: Path, count: int, seed: int) -> list:
    """Mixed JobMsgs: 70% extraction (2 images), 15% training, 15%
    classification of stored features."""
    from spacer_worker.messages import JobMsg
    from spacer_worker.tasks import train_classifier
    from tests.builders import classify_msg, extract_msg, train_msg

    rng = random.Random(seed)
    base = data / 'base'
    base.mkdir()
    train_classifier(train_msg(base, epochs=2))      # a model to classify
    model = base / 'model.pkl'
    features = sorted(base.glob('train*.featurevector'))
    jobs = []
    for n in range(count):
        kind = rng.random()
        if kind < 0.7:
            tasks = [extract_msg(data, f'job{n}-img{i}', seed=n * 2 + i)
                     for i in range(2)]
            jobs.append(JobMsg(task_name='extract_features', tasks=tasks))
        elif kind < 0.85:
            directory = data / f'train{n}'
            directory.mkdir()
            jobs.append(JobMsg(task_name='train_classifier',
                               tasks=[train_msg(directory, epochs=2)]))
        else:
            jobs.append(JobMsg(task_name='classify_features', tasks=[
                classify_msg(rng.choice(features), model)]))
    return jobs


def check_outputs(job) -> bool:
    """Whether every output of a succeeded job is whole and loads."""
    return output_problem(job) is None


def output_problem(job) -> str | None:
    """What is wrong with a succeeded job's outputs (None: nothing)."""
    from spacer_worker.data_classes import ImageFeatures
    from spacer_worker.storage import load_classifier

    try:
        for task in job.tasks:
            if job.task_name == 'extract_features':
                if ImageFeatures.load(task.feature_loc).npoints != \
                        len(task.rowcols):
                    return f'{task.feature_loc.key}: wrong point count'
            elif job.task_name == 'train_classifier':
                load_classifier(task.model_loc)
                json.loads(Path(task.valresult_loc.key).read_text())
    except Exception as e:
        return f'{type(e).__name__}: {e}'
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=500)
    parser.add_argument('--workers', type=int, default=3)
    parser.add_argument('--lease-ttl', type=float, default=3.0)
    parser.add_argument('--kill-every', type=float, default=20.0)
    parser.add_argument('--task-hold', type=float, default=0.2,
                        help='seconds each task is held (kills hit tasks)')
    parser.add_argument('--deadline', type=float, default=600.0,
                        help='seconds after its submission a job must be '
                             'collected by')
    parser.add_argument('--timeout', type=float, default=400.0)
    parser.add_argument('--seed', type=int, default=1)
    # Small on purpose: collection runs in many batches under the faults
    # (CeleryQueue's defaults are 10,000 and 500).
    parser.add_argument('--collect-batch', type=int, default=25,
                        help='finished jobs listed per collect cycle')
    parser.add_argument('--sweep-batch', type=int, default=25,
                        help='waiting jobs swept per collect cycle')
    parser.add_argument('--quick', action='store_true',
                        help='faults early and close together (test suite)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the temp directory (logs)')
    args = parser.parse_args()
    # Stopped from outside: still stop every process this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    rng = random.Random(args.seed)
    ttl = args.lease_ttl

    tmp = Path(tempfile.mkdtemp(prefix='spacer-chaos-'))
    (tmp / 'redis').mkdir()
    data = tmp / 'data'
    data.mkdir()
    server = RedisServer(tmp / 'redis', appendfsync='everysec')
    server.start()
    broker_url, backend_url = server.url(0), server.url(1)
    env = base_env(broker_url, SPACER_RESULT_BACKEND=backend_url,
                   SPACER_LEASE_TTL=str(ttl), CHAOS_BROKER_URL=broker_url,
                   CHAOS_TASK_HOLD=str(args.task_hold),
                   SPACER_TRAINING_CHECKPOINT='off',
                   # Workers are closed by default: this run's data only.
                   SPACER_FILESYSTEM_READ_ROOTS=str(data),
                   SPACER_FILESYSTEM_WRITE_ROOTS=str(data))
    workers: list[Worker] = []
    events: list[Event] = []
    counter = iter(range(10 ** 6))

    def new_worker(lease: bool = True) -> Worker:
        name = f'w{next(counter)}' if lease else 'leaseless'
        extra = {} if lease else {'SPACER_LEASE_TTL': '0'}
        return Worker(name, {**env, **extra}, tmp).start()

    print(f'chaos: {args.jobs} jobs, {args.workers} leased workers + 1 '
          f'lease-less, LEASE_TTL={ttl:g} s, kill -9 every '
          f'{args.kill_every:g} s; logs in {tmp}', flush=True)
    broker = redis.Redis.from_url(broker_url)
    try:
        jobs = make_jobs(data, args.jobs, args.seed)
        leased = [new_worker() for _ in range(args.workers)]
        leaseless = new_worker(lease=False)
        workers += [*leased, leaseless]

        from spacer_worker.celery import create_app
        from spacer_worker.client.coralnet import CeleryQueue
        app = create_app(set_as_current=False, broker_url=broker_url,
                         result_backend=backend_url)
        queue = CeleryQueue(app, handoff_timeout=2 * ttl,
                            collect_batch=args.collect_batch,
                            sweep_batch=args.sweep_batch)

        submitted: dict[int, float] = {}
        task_of: dict[int, str] = {}
        collected: dict[int, list] = {}
        words_seen: dict[int, str] = {}
        stop = threading.Event()
        crash_collector = threading.Event()
        state = {'redis_down': False, 'collector_crashes': 0,
                 'redis_restarts': 0}

        def retrying(call, *a, **k):
            while not stop.is_set():
                try:
                    return call(*a, **k)
                except Exception:
                    time.sleep(0.2)
            return None

        def submit_all() -> None:
            for n, job in enumerate(jobs):
                handle = retrying(queue.submit_job, job, n)
                if handle is None:
                    return
                submitted[n] = time.time()
                task_of[n] = handle.id
                time.sleep(0.01)

        def collect_loop() -> None:
            while not stop.is_set():
                try:
                    listed = queue.get_collectable_jobs()[:100]
                    if crash_collector.is_set() and listed:
                        crash_collector.clear()
                        original = queue._return_msg

                        def die(*a, **k):
                            raise KeyboardInterrupt('collector crashed')
                        queue._return_msg = die
                        try:
                            queue.collect_jobs(listed)
                        except KeyboardInterrupt:
                            print(f'  {elapsed():6.1f} s  collector crashed '
                                  f'in collect_jobs', flush=True)
                        finally:
                            queue._return_msg = original
                        continue
                    results, words = queue.collect_jobs(listed)
                    now = time.time()
                    for job, word in zip(listed, words, strict=True):
                        words_seen[job.job_id] = word
                    done = [(j, w) for j, w in zip(listed, words, strict=True)
                            if w in ('SUCCEEDED', 'FAILED', 'DROPPED')]
                    for (job, word), result in zip(done, results,
                                                   strict=True):
                        collected.setdefault(job.job_id, []).append(
                            (now, word, result))
                except Exception as e:
                    # Redis restarting, most often; anything else is shown.
                    if not isinstance(e, redis.RedisError):
                        import traceback
                        traceback.print_exc()
                time.sleep(0.3)

        started = time.time()

        def elapsed() -> float:
            return time.time() - started

        def chaos() -> None:
            # The one-off faults come at fractions of the jobs collected,
            # so they land mid-run whatever the machine's speed.
            schedule = [('stop', 0.15), ('redis', 0.35), ('collector', 0.5)]
            next_kill = started + (args.kill_every / 2 if args.quick
                                   else args.kill_every)
            while not stop.is_set() and (
                    len(collected) < len(jobs) or schedule):
                now = time.time()
                if schedule and len(collected) >= schedule[0][1] * len(jobs):
                    what, _ = schedule.pop(0)
                    if what == 'stop':
                        victim, held = pick_victim(rng, broker, leased)
                        victim.signal(signal.SIGSTOP)
                        event = Event(f'SIGSTOP {victim.name}', time.time(),
                                      held)
                        events.append(event)
                        print(f'  {elapsed():6.1f} s  SIGSTOP {victim.name} '
                              f'({len(event.held)} task(s) held) for '
                              f'{2.5 * ttl:g} s', flush=True)
                        time.sleep(2.5 * ttl)
                        victim.signal(signal.SIGCONT)
                    elif what == 'redis':
                        print(f'  {elapsed():6.1f} s  Redis restart',
                              flush=True)
                        state['redis_down'] = True
                        server.stop()
                        time.sleep(1)
                        server.start()
                        state['redis_down'] = False
                        state['redis_restarts'] += 1
                    else:
                        crash_collector.set()
                        while crash_collector.is_set() and \
                                not stop.is_set() and \
                                len(collected) < len(jobs):
                            time.sleep(0.1)
                        if not crash_collector.is_set():
                            state['collector_crashes'] += 1
                        crash_collector.clear()
                # Kills stop near the end: the last jobs are left to finish
                # (a kill every few seconds could hit the same one forever).
                if now >= next_kill and len(collected) < 0.9 * len(jobs):
                    next_kill = now + args.kill_every
                    victim, held = pick_victim(rng, broker, leased)
                    victim.kill()
                    events.append(Event(f'kill -9 {victim.name}',
                                        time.time(), held))
                    print(f'  {elapsed():6.1f} s  kill -9 {victim.name} '
                          f'({len(held)} task(s) held)', flush=True)
                    leased.remove(victim)
                    replacement = new_worker()
                    leased.append(replacement)
                    workers.append(replacement)
                time.sleep(0.2)

        threads = [threading.Thread(target=f, daemon=True)
                   for f in (submit_all, collect_loop, chaos)]
        for t in threads:
            t.start()
        deadline = started + args.timeout
        last_report = 0.0
        while time.time() < deadline and (len(collected) < len(jobs)
                                          or threads[2].is_alive()):
            if time.time() - last_report > 15:
                last_report = time.time()
                print(f'  {elapsed():6.1f} s  submitted {len(submitted)}, '
                      f'collected {len(collected)}', flush=True)
            time.sleep(0.5)
            if len(collected) == len(jobs) and threads[2].is_alive():
                # Let pending faults finish (they run while jobs remain).
                time.sleep(0.5)
        # One more collect call confirms the last results handed out.
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        total = elapsed()

        # --- figures ---------------------------------------------------
        commits = {k.decode(): int(v) for k, v in
                   broker.hgetall('chaos:commits').items()}
        runs = [json.loads(r) for r in broker.lrange('chaos:runs', 0, -1)]
        run_count: dict[str, int] = {}
        for r in runs:
            run_count[r['id']] = run_count.get(r['id'], 0) + 1
        done = {k.decode(): json.loads(v) for k, v in
                broker.hgetall('chaos:done').items()}
        # Recovery: from the fault until every task the victim held has its
        # result stored elsewhere; bound: 2 x TTL + that run's own length.
        # A task hit again by a later fault before it finished counts, for
        # this fault, until it started again elsewhere (the later fault
        # measures its own recovery).
        for index, event in enumerate(events):
            ends, own = [], []
            for task_id in event.held:
                later = [e for e in events[index + 1:] if task_id in e.held]
                if later:
                    restarts = [r['at'] for r in runs if r['id'] == task_id
                                and event.at < r['at'] <= later[0].at]
                    ends.append(min(restarts, default=later[0].at))
                    continue
                if task_id not in done:
                    ends = None
                    break
                start, end = done[task_id]
                ends.append(end)
                own.append(end - (start or end))
            if ends is not None:
                event.recovered_at = max(ends, default=event.at)
                event.bound = 2 * ttl + max(own, default=0.0)
        lost = [n for n in range(len(jobs))
                if n not in collected or collected[n][0][1] == 'DROPPED']
        twice = [t for t, c in commits.items() if c > 1]
        stuck = [n for n in range(len(jobs)) if n in submitted and (
            n not in collected or
            collected[n][0][0] - submitted[n] > args.deadline)]
        partial = [n for n in collected if collected[n][0][1] == 'SUCCEEDED'
                   and not check_outputs(jobs[n])]
        failed = [n for n in collected if collected[n][0][1] == 'FAILED'
                  or not getattr(collected[n][0][2], 'ok', True)]
        delivered_twice = sum(1 for v in collected.values() if len(v) > 1)
        reruns = sum(1 for c in run_count.values() if c > 1)
        leftovers = [p.name for p in data.rglob('.*') if p.is_file()]
        measured = [e for e in events if e.held and
                    e.recovered_at is not None]
        unrecovered = [e.what for e in events if e.recovered_at is None]
        slowest = max(measured, key=lambda e: e.recovered_at - e.at,
                      default=None)
        late = [e for e in measured if e.recovered_at - e.at > e.bound]
        print()
        print(f'jobs               {len(jobs)} submitted, {len(collected)} '
              f'collected in {total:.0f} s ({failed and len(failed) or 0} '
              f'answered ok=False)')
        print(f'faults             {sum(e.what.startswith("kill") for e in events)} '
              f'kill -9, {sum(e.what.startswith("SIGSTOP") for e in events)} '
              f'SIGSTOP, {state["redis_restarts"]} Redis restart, '
              f'{state["collector_crashes"]} collector crash, 1 lease-less '
              f'worker')
        print(f'lost               {len(lost)}')
        print(f'committed twice    {len(twice)}   (re-run but not committed: '
              f'{reruns}; delivered twice to the collector: '
              f'{delivered_twice})')
        print(f'stuck past deadline {len(stuck)}  (deadline '
              f'{args.deadline:g} s after submission)')
        print(f'partial outputs    {len(partial)}  (hidden leftovers of '
              f'killed runs: {len(leftovers)})')
        if slowest is not None:
            print(f'slowest recovery   {slowest.recovered_at - slowest.at:.1f}'
                  f' s  after {slowest.what} (bound 2 x LEASE_TTL + the '
                  f'task = {slowest.bound:.1f} s); {len(measured)} faults hit '
                  f'running tasks, {len(late)} over their bound')
        else:
            print('slowest recovery   -  (no fault hit a running task)')
        if unrecovered:
            print('not recovered:', ', '.join(unrecovered))
        ok = not (lost or twice or stuck or partial or unrecovered or late
                  or failed)
        print('RESULT', 'PASS' if ok else 'FAIL')
        for event in measured:
            print(f'  {event.what}: {event.recovered_at - event.at:.1f} s '
                  f'(bound {event.bound:.1f} s), tasks {sorted(event.held)}')
        for n in partial:
            print(f'  partial: job {n} ({jobs[n].task_name}) task '
                  f'{task_of.get(n)}: {output_problem(jobs[n])}')
        for n in [m for m in range(len(jobs)) if m not in collected][:5]:
            print(f'  not collected: job {n} task {task_of.get(n)} last '
                  f'word {words_seen.get(n)}')
        if failed:
            print('ok=False answers:', [collected[n][0][2].error_message
                                        .strip().splitlines()[-1]
                                        for n in failed[:3]])
        return 0 if ok else 1
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
