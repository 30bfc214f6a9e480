"""Training from S3 features: fetched concurrently, trained the same."""

from __future__ import annotations

import threading
from pathlib import Path

from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels
from spacer_worker.messages import TrainingTaskLabels
from spacer_worker.storage import store_bytes
from spacer_worker.train_classifier import MiniBatchTrainer


def to_s3(labels: ImageLabels, bucket: str) -> ImageLabels:
    moved = {}
    for loc in labels.keys():
        remote = DataLocation('s3', f'features/{Path(loc.key).name}', bucket)
        store_bytes(remote, Path(loc.key).read_bytes())
        moved[remote] = labels[loc]
    return ImageLabels(moved)


def test_s3_features_are_fetched_concurrently_and_train_the_same(
        split, s3_bucket, monkeypatch):
    local = MiniBatchTrainer()(split, 2, [], 'LR')
    remote = TrainingTaskLabels(**{name: to_s3(split[name], s3_bucket)
                                   for name in ('train', 'ref', 'val')})
    state = {'now': 0, 'most': 0}
    lock = threading.Lock()
    real = ImageFeatures.read

    def watching(loc):
        with lock:
            state['now'] += 1
            state['most'] = max(state['most'], state['now'])
        try:
            return real(loc)
        finally:
            with lock:
                state['now'] -= 1

    monkeypatch.setattr(ImageFeatures, 'read', staticmethod(watching))
    from_s3 = MiniBatchTrainer()(remote, 2, [], 'LR')
    assert state['most'] > 1, 'remote files are fetched in parallel'
    assert from_s3[2].ref_accs == local[2].ref_accs
    assert from_s3[1] == local[1]
