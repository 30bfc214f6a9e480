"""Redis bytes per training, with and without payload offload.

One redis-server (started here, in a temp dir) and one real training worker
(``celery -A spacer_worker worker -Q train``). A training of
``--annotations`` labels (CoralNet-like feature keys, LR, 1 epoch: the
training itself is not what is measured) goes through CoralNet's path,
``contrib.coralnet.CeleryQueue``: submit_job, the worker runs it,
collect_jobs. Twice: with offload off (``PAYLOAD_OFFLOAD_BYTES=0``: the
labels travel in the broker message, the queue's books and the result's
``original_job``) and on (``PAYLOAD_LOCATION`` a temp directory: Redis
holds locations only).

Printed per mode: the JSON size of the message, Redis ``used_memory`` over
the baseline at its peak (sampled every 10 ms from submit to collect) and
while the finished result waits to be collected, the result record and
books entry (``STRLEN``/``HSTRLEN``), what is left after collect, and the
bytes in payload storage. Then the ratios.

Run:

    python3 benchmarks/redis_bytes.py                      # 1M annotations
    python3 benchmarks/redis_bytes.py --annotations 100000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.dispatch import start_redis  # noqa: E402

POINTS_PER_IMAGE = 200
DIM = 8


def write_features(directory: Path, images: int) -> list[str]:
    """Tiny feature files (DIM floats a point) with CoralNet-like names."""
    import numpy as np

    from spacer_worker.data_classes import DataLocation, ImageFeatures

    directory.mkdir(parents=True, exist_ok=True)
    rows = (np.arange(POINTS_PER_IMAGE) // 20) * 50 + 10
    cols = (np.arange(POINTS_PER_IMAGE) % 20) * 50 + 10
    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        path = str(directory / f'img{i:07d}_a1b2c3d4e5.jpg.featurevector')
        feat = rng.random((POINTS_PER_IMAGE, DIM), dtype=np.float32)
        ImageFeatures.from_arrays(rows, cols, feat).store(DataLocation('filesystem', path))
        paths.append(path)
    return paths


def training_job(paths: list[str], out: Path, annotations: int):
    import numpy as np

    from spacer_worker.data_classes import DataLocation, ImageLabels
    from spacer_worker.messages import (
        JobMsg,
        TrainClassifierMsg,
        TrainingTaskLabels,
    )

    rows = (np.arange(POINTS_PER_IMAGE) // 20) * 50 + 10
    cols = (np.arange(POINTS_PER_IMAGE) % 20) * 50 + 10
    rng = np.random.default_rng(1)
    sets: dict[str, dict] = {'train': {}, 'ref': {}, 'val': {}}
    left = annotations
    for i, path in enumerate(paths):
        n = min(POINTS_PER_IMAGE, left)
        left -= n
        labels = rng.integers(1, 30, size=n)
        part = 'ref' if i % 20 == 0 else 'val' if i % 20 == 1 else 'train'
        sets[part][DataLocation('filesystem', path)] = [
            (int(r), int(c), int(label) + 1000)
            for r, c, label in zip(rows[:n], cols[:n], labels, strict=True)]
    task = TrainClassifierMsg(
        job_token='classifier_4242', trainer='minibatch', nbr_epochs=1,
        clf_type='LR',
        labels=TrainingTaskLabels(**{k: ImageLabels(v)
                                     for k, v in sets.items()}),
        previous_model_locs=[],
        model_loc=DataLocation('filesystem', str(out / 'model.pkl')),
        valresult_loc=DataLocation('filesystem', str(out / 'valres.json')))
    return JobMsg(task_name='train_classifier', tasks=[task])


class Sampler(threading.Thread):
    """Peak of Redis used_memory while it runs."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            used = self.client.info('memory')['used_memory']
            self.peak = max(self.peak, used)
            time.sleep(0.01)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def measure(queue, app, client, job, label: str, payload_dir: Path) -> dict:
    import gc

    from spacer_worker.celery import payloads
    from spacer_worker.client.jobs import Client

    gc.collect()
    client.memory_purge() if hasattr(client, 'memory_purge') else None
    base = client.info('memory')['used_memory']
    sampler = Sampler(client)
    sampler.start()
    t0 = time.monotonic()
    handle = queue.submit_job(job, job_id=label)
    books = client.hstrlen(queue._key('msgs'), handle.id)
    watcher = Client(app)
    while not watcher.status(handle).finished:
        time.sleep(0.05)
    trained = time.monotonic() - t0
    waiting = client.info('memory')['used_memory'] - base
    result_bytes = client.strlen(app.backend.get_key_for_task(handle.id))
    stored = sum(p.stat().st_size for p in payload_dir.iterdir())
    jobs = queue.get_collectable_jobs()
    results, words = queue.collect_jobs(jobs)
    queue.ack_jobs(jobs)   # as CoralNet's next collect call would
    peak = sampler.stop() - base
    after = client.info('memory')['used_memory'] - base
    assert words == ['SUCCEEDED'], (words, results[0].error_message)
    assert results[0].original_job == job, 'original_job differs'
    return {'mode': label, 'message_json': len(payloads.encode(
                job.serialize())),
            'peak': peak, 'waiting': waiting, 'result_record': result_bytes,
            'books_entry': books, 'after_collect': after,
            'payload_storage': stored,
            'payload_left': len(list(payload_dir.iterdir())),
            'seconds': trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--annotations', type=int, default=1_000_000)
    args = parser.parse_args()

    import redis

    tmp = Path(tempfile.mkdtemp(prefix='redis-bytes-'))
    redis_proc, url = start_redis(tmp)
    payload_dir = tmp / 'payloads'
    payload_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith('SPACER_')}
    settings = {'SPACER_BROKER_URL': url, 'SPACER_RESULT_BACKEND': url,
                'SPACER_PAYLOAD_LOCATION': str(payload_dir),
                'SPACER_SECRETS_PATH': str(tmp / 'no-secrets.json'),
                # Workers are closed by default: this run's folder only.
                'SPACER_FILESYSTEM_WRITE_ROOTS': str(tmp)}
    env.update(settings, PYTHONPATH=str(REPO))
    os.environ.update(settings)
    worker = None
    try:
        images = -(-args.annotations // POINTS_PER_IMAGE)
        print(f'Writing {images} feature files ({args.annotations} '
              f'annotations)...', flush=True)
        paths = write_features(tmp / 'features', images)
        job = training_job(paths, tmp, args.annotations)
        worker = subprocess.Popen(
            [sys.executable, '-m', 'celery', '-A', 'spacer_worker', 'worker',
             '-Q', 'train', '-c', '1', '-n', 'bytes@%h', '-l', 'warning',
             '--without-mingle', '--without-gossip'],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp / 'worker.log', 'wb'), start_new_session=True)

        from spacer_worker.celery import create_app
        from spacer_worker.client.coralnet import CeleryQueue
        app = create_app(set_as_current=False)
        queue = CeleryQueue(app)
        client = redis.Redis.from_url(url)
        # Warm up: the worker's first task sets up its connections and
        # keys, which would otherwise count against the first mode.
        os.environ['SPACER_PAYLOAD_OFFLOAD_BYTES'] = '0'
        measure(queue, app, client, training_job(paths[:40], tmp, 4000),
                'warm-up', payload_dir)
        rows = []
        for label, threshold in (('inline', '0'), ('offload', '262144')):
            os.environ['SPACER_PAYLOAD_OFFLOAD_BYTES'] = threshold
            print(f'Training through Redis ({label})...', flush=True)
            rows.append(measure(queue, app, client, job, label, payload_dir))
        mb = 1 / 1e6
        print(f'\nRedis bytes per training, {args.annotations} annotations '
              f'(CeleryQueue submit -> worker -> collect):')
        keys = [('message_json', 'JobMsg JSON'),
                ('peak', 'Redis peak over baseline'),
                ('waiting', 'Redis while result awaits collect'),
                ('result_record', '  result record (STRLEN)'),
                ('books_entry', '  CeleryQueue books entry'),
                ('after_collect', 'Redis after collect + ack'),
                ('payload_storage', 'payload storage while running')]
        print(f'{"":36s}' + ''.join(f'{r["mode"]:>14s}' for r in rows))
        for key, name in keys:
            print(f'{name:36s}' + ''.join(f'{r[key] * mb:12.2f}MB'
                                          for r in rows))
        print(f'{"stored payloads left after ack":36s}' +
              ''.join(f'{r["payload_left"]:14d}' for r in rows))
        print(f'{"submit -> finished (s)":36s}' +
              ''.join(f'{r["seconds"]:14.1f}' for r in rows))
        inline, offload = rows
        for key in ('peak', 'waiting'):
            print(f'{key}: offload uses {offload[key] / inline[key]:.4f} of '
                  f'inline ({inline[key] / max(offload[key], 1):.0f}x less)')
        print(json.dumps(rows))
    finally:
        if worker is not None:
            os.killpg(worker.pid, 9)
            worker.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
