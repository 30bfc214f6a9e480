"""preprocess_labels: what each split mode guarantees."""

from __future__ import annotations

from collections import Counter

import pytest

from spacer_worker.data_classes import DataLocation, ImageLabels
from spacer_worker.messages import TrainingTaskLabels
from spacer_worker.task_utils import SplitMode, preprocess_labels


def make_labels(images: int, per_image: int, classes: list) -> ImageLabels:
    """Labels only (no feature files): class cycles over the points."""
    data = {}
    n = 0
    for i in range(images):
        annotations = []
        for p in range(per_image):
            annotations.append((p, p, classes[n % len(classes)]))
            n += 1
        data[DataLocation('filesystem', f'/f/{i}.npz')] = annotations
    return ImageLabels(data)


def points_of(labels: ImageLabels) -> list:
    return [(loc.key, r, c, label) for loc in labels.keys()
            for r, c, label in labels[loc]]


def test_vectors_keeps_each_image_in_one_set():
    labels = make_labels(50, 20, [1, 2, 3])
    split = preprocess_labels(labels, split_mode=SplitMode.VECTORS)
    keys = [set(split[s].keys()) for s in ('train', 'ref', 'val')]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert keys[0] | keys[1] | keys[2] == set(labels.keys())
    # val and ref meet their goal (10% of 1000) in whole images.
    assert split.val.label_count == 100 and split.ref.label_count == 100
    assert split.train.label_count == 800


def test_points_sizes_are_exact_and_every_point_used_once():
    labels = make_labels(7, 31, [1, 2, 3])  # 217 points
    split = preprocess_labels(labels, split_ratios=(0.2, 0.1),
                              split_mode=SplitMode.POINTS)
    assert (split.train.label_count, split.ref.label_count,
            split.val.label_count) == (152, 43, 22)
    every = points_of(split.train) + points_of(split.ref) + points_of(split.val)
    assert sorted(every) == sorted(points_of(labels))
    # Points of one image are dealt to several sets.
    assert set(split.train.keys()) & set(split.val.keys())


def test_points_stratified_splits_each_class_in_proportion():
    labels = make_labels(10, 40, ['a'] * 6 + ['b'] * 3 + ['c'])
    split = preprocess_labels(labels, split_mode=SplitMode.POINTS_STRATIFIED)
    total = Counter(label for *_, label in points_of(labels))
    for name in ('ref', 'val'):
        counts = Counter(label for *_, label in points_of(split[name]))
        for label, n in total.items():
            assert abs(counts[label] - 0.1 * n) <= 1, (name, label, counts)


def test_points_stratified_drops_classes_too_rare_to_stratify():
    data = {DataLocation('filesystem', f'/f/{i}.npz'):
            [(p, 0, 1 + p % 2) for p in range(30)] for i in range(4)}
    data[DataLocation('filesystem', '/f/rare.npz')] = [(0, 0, 9), (1, 0, 9)]
    split = preprocess_labels(ImageLabels(data),
                              split_mode=SplitMode.POINTS_STRATIFIED)
    for name in ('train', 'ref', 'val'):
        assert split[name].classes_set == {1, 2}


def test_ref_set_is_capped_by_the_batch_label_count(monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_BATCH_LABEL_COUNT', '30')
    labels = make_labels(20, 50, [1, 2])
    split = preprocess_labels(labels, split_mode=SplitMode.POINTS)
    assert split.ref.label_count == 30
    assert split.val.label_count == 100


def test_accepted_classes_filter_before_splitting():
    labels = make_labels(20, 20, [1, 2, 3])
    split = preprocess_labels(labels, accepted_classes={1, 2},
                              split_mode=SplitMode.POINTS)
    assert split.train.classes_set == {1, 2}
    assert split.label_count == sum(
        1 for *_, label in points_of(labels) if label in (1, 2))


def test_presplit_labels_keep_only_classes_in_both_train_and_ref():
    loc = DataLocation('filesystem', '/f/a.npz')
    given = TrainingTaskLabels(
        train=ImageLabels({loc: [(0, 0, 1), (1, 0, 2), (2, 0, 3)]}),
        ref=ImageLabels({loc: [(3, 0, 1), (4, 0, 2), (5, 0, 4)]}),
        val=ImageLabels({loc: [(6, 0, 1), (7, 0, 3), (8, 0, 4)]}))
    before = given.serialize()
    split = preprocess_labels(given)
    assert split.train[loc] == [(0, 0, 1), (1, 0, 2)]
    assert split.ref[loc] == [(3, 0, 1), (4, 0, 2)]
    assert split.val[loc] == [(6, 0, 1)]
    assert given.serialize() == before, 'the input must not be modified'


def test_split_mode_is_accepted_by_value():
    labels = make_labels(10, 20, [1, 2])
    by_value = preprocess_labels(labels, split_mode='points')
    by_enum = preprocess_labels(labels, split_mode=SplitMode.POINTS)
    assert by_value.serialize() == by_enum.serialize()


@pytest.mark.parametrize('mode', list(SplitMode))
def test_split_is_the_same_every_time(mode):
    labels = make_labels(30, 17, [1, 2, 3, 4])
    first = preprocess_labels(labels, split_mode=mode).serialize()
    assert preprocess_labels(labels, split_mode=mode).serialize() == first


def test_client_side_split_imports_no_numpy_or_scikit_learn():
    import subprocess
    import sys
    code = (
        'import sys\n'
        'from spacer_worker.data_classes import DataLocation, ImageLabels\n'
        'from spacer_worker.task_utils import preprocess_labels\n'
        'labels = ImageLabels({DataLocation("filesystem", f"/f/{i}"): '
        '[(p, 0, p % 2) for p in range(10)] for i in range(20)})\n'
        'print(preprocess_labels(labels).label_count)\n'
        'print(sorted({"numpy", "sklearn", "torch"} & set(sys.modules)))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.split('\n')
    assert out[:2] == ['200', '[]']
