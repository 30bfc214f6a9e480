"""PySpacer's data-class behaviour on top of array-backed features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spacer_worker.data_classes import (
    DataLocation,
    ImageFeatures,
    ImageLabels,
    PointFeatures,
    ValResults,
)
from spacer_worker.exceptions import (
    MessageError,
    RowColumnMismatchError,
    RowColumnMissingError,
)
from spacer_worker.messages import ClassifyReturnMsg, TrainingTaskLabels


def features(n=3, dim=4):
    feat = np.arange(n * dim, dtype=np.float32).reshape(n, dim) / 10
    return ImageFeatures.from_arrays(np.arange(n) * 10, np.arange(n) * 20,
                                     feat)


def test_from_arrays_keeps_arrays_and_builds_points_only_on_demand():
    f = features()
    assert f._point_features is None
    assert f.feature_array().dtype == np.float32
    assert f.feature_array().shape == (3, 4)
    assert (f.npoints, f.feature_dim, f.valid_rowcol) == (3, 4, True)

    points = f.point_features

    assert [(p.row, p.col) for p in points] == [(0, 0), (10, 20), (20, 40)]
    assert isinstance(points[1].row, int)
    assert np.allclose(points[2].data, [0.8, 0.9, 1.0, 1.1])


def test_lookup_by_rowcol_and_annotation_matching():
    f = features()
    assert np.allclose(f[(10, 20)], [0.4, 0.5, 0.6, 0.7])
    assert f.get_array((20, 40)).shape == (1, 4)
    assert f.indices_for([(20, 40), (0, 0)]) == [2, 0]

    pairs = list(f.match_with_annotations([(10, 20, 'A'), (0, 0, 7)]))

    assert [label for _, label in pairs] == ['A', 7]
    assert np.allclose(pairs[0][0], f[(10, 20)])
    with pytest.raises(RowColumnMismatchError, match=r'\(5, 5\)'):
        list(f.match_with_annotations([(5, 5, 'A')]))


def test_pyspacer_constructor_equals_from_arrays():
    f = features(2, 3)
    g = ImageFeatures(point_features=[
        PointFeatures(0, 0, [0.0, 0.1, 0.2]),
        PointFeatures(10, 20, [0.3, 0.4, 0.5])],
        valid_rowcol=True, feature_dim=3, npoints=2)
    assert g == f
    assert g != features(2, 4)


def test_legacy_features_have_no_positions():
    legacy = ImageFeatures.deserialize([[1.0, 2.0], [3.0, 4.0]])
    assert not legacy.valid_rowcol
    assert [p.row for p in legacy.point_features] == [None, None]
    with pytest.raises(RowColumnMissingError):
        list(legacy.match_with_annotations([(1, 1, 'A')]))
    with pytest.raises(ValueError):
        legacy[(1, 1)]
    with pytest.raises(NotImplementedError):
        legacy.serialize()


@pytest.mark.parametrize('build,words', [
    (lambda: ImageFeatures.from_arrays([], [], np.zeros((0, 3))), ['no points']),
    (lambda: ImageFeatures.from_arrays([1], [1], [[1.0]], npoints=2),
     ['npoints', '2']),
    (lambda: ImageFeatures.from_arrays([1, 2], [1], [[1.0], [2.0]]),
     ['2 rows and 1 cols']),
    (lambda: ImageFeatures.from_arrays([1], [1], [1.0, 2.0]), ['2-d']),
    (lambda: ImageFeatures.deserialize({'feat': []}), ['legacy']),
    (lambda: ImageFeatures(point_features=[PointFeatures(1, 1, [1.0])],
                           valid_rowcol=True, feature_dim=2, npoints=1),
     ['feature_dim = 2']),
])
def test_inconsistent_features_are_refused(build, words):
    with pytest.raises(MessageError) as info:
        build()
    for word in words:
        assert word in str(info.value)


def test_features_store_and_load_through_storage(tmp_path):
    loc = DataLocation('filesystem', str(tmp_path / 'a.featurevector'))
    f = features()
    f.store(loc)
    assert ImageFeatures.load(loc) == f


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server serving ``tmp_path / 'www'``."""
    import functools
    import http.server
    import threading

    root = tmp_path / 'www'
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_remote_features_are_cached_in_the_given_directory(tmp_path,
                                                           http_dir):
    root, base_url = http_dir
    source = root / 'src.featurevector'
    features().store(DataLocation('filesystem', str(source)))
    loc = DataLocation('url', f'{base_url}/src.featurevector')
    cache = tmp_path / 'cache'

    first = ImageFeatures.load(loc, str(cache))
    source.unlink()
    again = ImageFeatures.load(loc, str(cache))

    assert first == again == features()
    assert len(list(cache.rglob('src.featurevector'))) == 1


def test_image_labels_counts_filtering_and_json_keys():
    s3 = DataLocation('s3', 'f/1.fv', 'bucket')
    fs = DataLocation('filesystem', '/f/2.fv')
    labels = ImageLabels({s3: [(1, 2, 'A'), (3, 4, 'B')], fs: [[5, 6, 'A']]})

    assert labels.label_count == 3
    assert labels.classes_set == {'A', 'B'}
    assert labels.has_remote_data
    assert labels[fs] == [(5, 6, 'A')]
    assert fs in labels and len(labels) == 2
    assert list(labels.serialize()) == [json.dumps(s3.serialize()),
                                        json.dumps(fs.serialize())]
    only_b = labels.filter_classes(['B'])
    assert list(only_b.keys()) == [s3] and only_b.label_count == 1
    assert not ImageLabels({fs: [(1, 1, 1)]}).has_remote_data

    labels.add_image(s3, [(9, 9, 'C')])
    assert labels.label_count_per_class == {'A': 1, 'C': 1}


def test_training_task_labels_item_access():
    labels = TrainingTaskLabels.example()
    assert labels['ref'] is labels.ref
    assert labels.label_count == 3 * 8
    labels['val'] = ImageLabels({DataLocation('memory', 'x'): [(1, 1, 1)]})
    assert labels.val.label_count == 1
    with pytest.raises(KeyError):
        labels['test']
    labels['val'] = {}    # kept as given, as PySpacer keeps it
    with pytest.raises(MessageError, match='val'):
        labels.check()


def test_data_location_properties():
    url = DataLocation('url', 'https://h.org/a/b/img.png?sig=1')
    assert url.filename == 'img.png'
    assert url.is_remote and not url.is_writable
    assert DataLocation('s3', 'x/y.pt', 'b').is_remote
    fs = DataLocation('filesystem', '/a/b.pt')
    assert fs.filename == 'b.pt' and not fs.is_remote and fs.is_writable
    assert DataLocation.deserialize(fs.serialize()) == fs


def test_classify_return_lookup_by_rowcol():
    msg = ClassifyReturnMsg.example()
    assert msg[(20, 40)] == [0.9, 0.06, 0.04]
    legacy = ClassifyReturnMsg(runtime=1.0, scores=[(None, None, [1.0])],
                               classes=[1], valid_rowcol=False)
    with pytest.raises(ValueError):
        legacy[(1, 1)]


def test_val_results_store_and_load_as_json():
    loc = DataLocation('memory', 'valresults.json')
    ValResults.example().store(loc)
    assert ValResults.load(loc) == ValResults.example()


def test_numpy_values_become_plain_json_values():
    msg = ClassifyReturnMsg(
        runtime=np.float64(0.5),
        scores=[(np.int64(1), np.int64(2), [np.float32(0.25), 0.75])],
        classes=[np.int64(4), 'B'], valid_rowcol=True)
    assert json.loads(json.dumps(msg.serialize())) == {
        'runtime': 0.5, 'scores': [[1, 2, [0.25, 0.75]]], 'classes': [4, 'B'],
        'valid_rowcol': True}


@pytest.mark.reference
def test_label_batches_match_pyspacer(tmp_path, pyspacer_reference):
    from tests.reference import run_reference
    rng = np.random.default_rng(0)
    data = {}
    for i in range(7):
        loc = DataLocation('filesystem', str(tmp_path / f'{i}.featurevector'))
        ImageFeatures.from_arrays([1, 2, 3], [4, 5, 6],
                                  rng.random((3, 2))).store(loc)
        data[loc] = [(3, 6, f'L{i % 3}'), (1, 4, i % 2)]
    labels = ImageLabels(data)

    def batches(seed):
        return [[np.asarray(x).tolist(), list(y)] for x, y in
                labels.load_data_in_batches(batch_size=4, random_seed=seed)]

    reference = run_reference('''
from spacer.data_classes import ImageLabels
labels = ImageLabels.deserialize(PAYLOAD)
RESULT = [[[[float(v) for v in vec] for vec in x], list(y)]
          for seed in (None, 3)
          for x, y in labels.load_data_in_batches(batch_size=4,
                                                  random_seed=seed)]
''', labels.serialize())

    ours = batches(None) + batches(3)
    assert [y for _, y in ours] == [y for _, y in reference]
    assert np.allclose(np.concatenate([x for x, _ in ours]),
                       np.concatenate([x for x, _ in reference]))
    assert labels.load_all_data(random_seed=3)[1] == sum(
        (y for _, y in batches(3)), [])
