"""The squeeze-excite gates multiplied in ONNX Runtime's blocked layout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

from spacer_worker.extractors.runtime import blocked_gates  # noqa: E402
from spacer_worker.extractors.runtime.calibration import (  # noqa: E402
    calibrated_state,
)
from spacer_worker.extractors.runtime.folded import fold_network  # noqa: E402
from spacer_worker.extractors.runtime.onnx_graph import (  # noqa: E402
    ACTIVATION_NAME,
    INPUT_NAME,
    SPLIT_BLOCK,
    build_split_models,
)
from spacer_worker.extractors.runtime.ort_session import (  # noqa: E402
    ort_session as _session,
)


def _op_types(model: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model).graph.node]


@pytest.fixture(scope='module')
def split_models() -> tuple[bytes, bytes]:
    return build_split_models(fold_network(calibrated_state(seed=3)))


@pytest.fixture(scope='module')
def patches() -> np.ndarray:
    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    image = np.asarray(synthetic_texture(np.random.default_rng(5), 448))
    return np.ascontiguousarray(np.stack(
        [image[:224, :224], image[224:, 224:], image[:224, 224:]]))


def _blocked_layout_here(model: bytes) -> bool:
    # ONNX Runtime uses NCHWc only where MLAS has blocked kernels (AVX2,
    # AVX-512); elsewhere there are no reorders to take out.
    return 'ReorderOutput' in _op_types(blocked_gates._optimized(model)[0])


def test_every_gate_runs_blocked_and_features_are_bit_identical(
        split_models, patches):
    front, back = split_models
    if not _blocked_layout_here(front):
        pytest.skip('ONNX Runtime has no blocked layout on this CPU')
    # Given the two halves of the network, rewritten with a probe patch
    # that is not among the patches checked below,
    probe = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3),
                                              dtype=np.uint8)
    blocked_front = blocked_gates.blocked_gate_model(
        front, {INPUT_NAME: probe}, _session)
    assert blocked_front is not None
    plain = [_session(m, True) for m in (front, back)]
    activations = np.concatenate([
        plain[0].run(None, {INPUT_NAME: patches[i:i + 1]})[0]
        for i in range(len(patches))])
    blocked_back = blocked_gates.blocked_gate_model(
        back, {ACTIVATION_NAME: activations[:2]}, _session)
    assert blocked_back is not None
    # then no gate leaves the blocked layout any more: only the small
    # squeeze-excite vectors are reordered, never a map before a Mul,
    for blocked, gates in ((blocked_front, SPLIT_BLOCK),
                           (blocked_back, 16 - SPLIT_BLOCK)):
        graph = onnx.load_from_string(blocked.model).graph
        producer = {o: n for n in graph.node for o in n.output}
        gate_muls = [n for n in graph.node
                     if n.op_type == 'Mul' and n.input[0].startswith(
                         'blocked_gate_')]
        assert len(gate_muls) == gates
    # (two reorders fewer per gate: the map's, and the gate vector's own)
    for model, blocked, gates in ((front, blocked_front, SPLIT_BLOCK),
                                  (back, blocked_back, 16 - SPLIT_BLOCK)):
        reorders = _op_types(blocked_gates._optimized(model)[0]).count(
            'ReorderOutput')
        assert _op_types(blocked.model).count('ReorderOutput') == \
            reorders - 2 * gates
        assert not any(producer[i].op_type == 'ReorderOutput'
                       for n in graph.node if n.op_type == 'Mul'
                       for i in n.input if i in producer)
    # and the features are the plain network's, bit for bit, at any batch.
    # (the sessions returned, and fresh ones on the edited graphs alike)
    for fast in ([blocked_front.session, blocked_back.session],
                 [_session(b.model, False)
                  for b in (blocked_front, blocked_back)]):
        _check_same_features(fast, plain, patches, activations)


def _check_same_features(fast, plain, patches, activations) -> None:
    fast_activations = np.concatenate([
        fast[0].run(None, {INPUT_NAME: patches[i:i + 1]})[0]
        for i in range(len(patches))])
    assert np.array_equal(fast_activations, activations)
    for batch in (1, 3):
        expected = plain[1].run(
            None, {ACTIVATION_NAME: activations[:batch]})[0]
        got = fast[1].run(None, {ACTIVATION_NAME: activations[:batch]})[0]
        assert np.array_equal(got, expected), batch


def test_a_graph_without_gates_is_left_to_onnx_runtime():
    # A model with no squeeze-excite gate has nothing to rewrite: None,
    # so the caller runs the plain model.
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(16, 16, 1, 1)).astype(
            np.float32), 'w')
    graph = helper.make_graph(
        [helper.make_node('Conv', ['x', 'w'], ['y'], kernel_shape=[1, 1])],
        'no_gates',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                       [1, 16, 8, 8])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT,
                                       [1, 16, 8, 8])],
        [weight])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 17)])
    model.ir_version = 8
    probe = {'x': np.ones((1, 16, 8, 8), np.float32)}
    assert blocked_gates.blocked_gate_model(
        model.SerializeToString(), probe, _session) is None


def test_a_rewrite_that_changes_the_output_is_not_used(split_models):
    # Should the blocked form ever compute something else (another ONNX
    # Runtime, a layout this module does not know), the probe catches it
    # and the plain model is kept. That fault cannot be made to order, so
    # the edited model's session here is one ulp off in its output.
    front, _ = split_models
    if not _blocked_layout_here(front):
        pytest.skip('ONNX Runtime has no blocked layout on this CPU')

    class OneUlpOff:
        def __init__(self, session):
            self._session = session

        def run(self, names, feeds):
            return [np.nextafter(out, np.inf)
                    for out in self._session.run(names, feeds)]

    def session(model: bytes, optimize: bool):
        made = _session(model, optimize)
        return made if optimize else OneUlpOff(made)

    probe = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3),
                                              dtype=np.uint8)
    assert blocked_gates.blocked_gate_model(
        front, {INPUT_NAME: probe}, session) is None
    assert blocked_gates.blocked_gate_model(
        front, {INPUT_NAME: probe}, _session) is not None


def test_the_backend_runs_blocked_gates_where_the_cpu_has_the_layout(
        split_models, patches):
    # The worker's ONNX Runtime backend says which graphs it runs, and its
    # features are the plain graphs' either way.
    from spacer_worker.extractors.runtime.backends import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(
        fold_network(calibrated_state(seed=3)), threads=1)
    front, back = split_models
    assert backend.blocked_gates == _blocked_layout_here(front)
    plain = [_session(m, True) for m in (front, back)]
    activations = np.concatenate([
        plain[0].run(None, {INPUT_NAME: patches[i:i + 1]})[0]
        for i in range(len(patches))])
    expected = plain[1].run(None, {ACTIVATION_NAME: activations})[0]
    assert np.array_equal(backend.run(patches), expected)


def test_the_setting_turns_the_rewrite_off_with_the_same_features(
        weights, split_models, monkeypatch):
    # EXTRACT_BLOCKED_GATES=false runs ONNX Runtime's own graphs (an
    # operator's way out, and the benchmark's comparison); the features
    # do not change, bit for bit.
    from spacer_worker.extractors.runtime import engine
    from spacer_worker.extractors.runtime.calibration import synthetic_texture
    monkeypatch.setenv('SPACER_EXTRACT_BACKEND', 'onnxruntime')
    image = synthetic_texture(np.random.default_rng(2), 400)
    points = [(30, 40), (200, 300), (399, 0)]
    extractor = weights.extractor()
    on, _ = extractor(image, points)
    network_on = engine.cached_network(weights.sha256)
    monkeypatch.setenv('SPACER_EXTRACT_BLOCKED_GATES', 'false')
    off, _ = extractor(image, points)
    network_off = engine.cached_network(weights.sha256)
    assert network_off is not network_on
    assert network_off.backend.blocked_gates is False
    assert network_on.backend.blocked_gates == _blocked_layout_here(
        split_models[0])
    assert np.array_equal(on.feature_array(), off.feature_array())
