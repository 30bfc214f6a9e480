"""The first layer's products of an MLP step on NumPy or ONNX Runtime:
the same results, the engine chosen by a rule (shape and machine build,
never timing), by a resumed training's checkpoint, or by the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from spacer_worker.exceptions import ConfigError
from spacer_worker.training import products
from spacer_worker.training.mlp_steps import MLPSteps
from spacer_worker.training.products import (
    NumpyProducts,
    OnnxRuntimeProducts,
    products_for,
)
from tests.services import REPO
from tests.training.test_mlp_steps import chunks, first_fit


def arrays(rows=200, dim=1280, width=100, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((rows, dim), dtype=np.float32),
            rng.normal(size=(dim, width)).astype(np.float32),
            rng.normal(size=(rows, width)).astype(np.float32))


def close_to_float64(got, a, b):
    # float32 products, summed in some order: within float32 rounding of
    # the float64 result (relative to the terms' size).
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert (np.abs(got - exact) <= 1e-6 * scale + 1e-30).all()


@pytest.mark.parametrize('rows', [200, 37])
def test_onnxruntime_products_are_float32_products(rows):
    x, w, delta = arrays(rows=rows)
    engine = OnnxRuntimeProducts()
    hidden = np.full((rows, 100), np.nan, dtype=np.float32)
    grad = np.full((1280, 100), np.nan, dtype=np.float32)
    engine.forward(x, w, hidden)
    engine.weight_grad(x, delta, grad)
    close_to_float64(hidden, x, w)
    close_to_float64(grad, x.T, delta)
    # and agree with NumPy's to float32 rounding.
    reference = np.empty_like(grad)
    NumpyProducts().weight_grad(x, delta, reference)
    np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-3)


def test_bound_arrays_are_read_at_each_call():
    # The weights and output stay bound between calls: a step that
    # updates the weights in place, or passes a new batch, must see it.
    x, w, _delta = arrays(rows=50, dim=64, width=8)
    engine = OnnxRuntimeProducts()
    out = np.empty((50, 8), dtype=np.float32)
    engine.forward(x, w, out)
    w *= 3
    engine.forward(x, w, out)
    close_to_float64(out, x, w)
    other = np.ascontiguousarray(x[::-1])
    engine.forward(other, w, out)
    close_to_float64(out, other, w)
    second = np.empty_like(out)
    engine.forward(x, w, second)
    close_to_float64(second, x, w)
    close_to_float64(out, other, w)   # the first output was left alone


def test_arrays_onnxruntime_cannot_bind_are_refused():
    x, w, _delta = arrays(rows=20, dim=16, width=4)
    out = np.empty((20, 4), dtype=np.float32)
    engine = OnnxRuntimeProducts()
    with pytest.raises(ValueError, match='C-ordered float32'):
        engine.forward(x.astype(np.float64), w, out)
    with pytest.raises(ValueError, match='C-ordered float32'):
        engine.forward(np.asfortranarray(x), w, out)


def test_packaged_models_are_what_build_gemm_model_writes():
    # scripts/make-gemm-models.py wrote them; a change to the builder
    # needs the files written again.
    for trans_a in (False, True):
        packaged = onnx.load_from_string(products.gemm_model(trans_a))
        built = onnx.load_from_string(products.build_gemm_model(trans_a))
        onnx.checker.check_model(packaged)
        assert packaged.graph == built.graph
        assert packaged.opset_import == built.opset_import


def test_the_setting_names_the_engine(monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_MATMUL', 'numpy')
    assert isinstance(products_for(200, 1280, 100), NumpyProducts)
    monkeypatch.setenv('SPACER_TRAINING_MATMUL', 'ONNXRuntime')
    assert isinstance(products_for(2, 3, 4), OnnxRuntimeProducts)
    monkeypatch.setenv('SPACER_TRAINING_MATMUL', 'mkl')
    with pytest.raises(ConfigError, match="TRAINING_MATMUL='mkl'"):
        products_for(200, 1280, 100)


def test_auto_follows_the_rule_and_keeps_small_products_on_numpy(
        monkeypatch):
    monkeypatch.delenv('SPACER_TRAINING_MATMUL', raising=False)
    # Small: a call's fixed cost outweighs any kernel difference.
    assert isinstance(products_for(200, 48, 30), NumpyProducts)
    # Large: what the rule says for this machine, call after call.
    rule = products.auto_engine(200, 1280, 100)
    assert {products_for(200, 1280, 100).name for _ in range(5)} == {rule}


_RULE_IN_A_PROCESS = """
from spacer_worker.training import products, threads
print(threads.numpy_blas_architecture(), products.auto_engine(200, 1280, 100))
"""


def _rule_with(env_update):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SPACER_', 'OPENBLAS_'))}
    env.update(env_update)
    out = subprocess.run([sys.executable, '-c', _RULE_IN_A_PROCESS],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=str(REPO)).stdout.split()
    return out[0], out[1]


@pytest.mark.skipif(not products._cpu_has('avx512f'),
                    reason='the rule tells kernels apart on AVX-512 CPUs')
def test_on_an_avx512_cpu_mlas_takes_over_from_avx2_only_openblas_kernels():
    # OpenBLAS pinned to its AVX2 kernels (as some environments pin it):
    # MLAS's AVX-512 kernels are the wider, in every process alike.
    assert _rule_with({'OPENBLAS_CORETYPE': 'Haswell'}) == \
        ('haswell', 'onnxruntime')
    # OpenBLAS on its own AVX-512 kernels: NumPy.
    assert _rule_with({'OPENBLAS_CORETYPE': 'SkylakeX'}) == \
        ('skylakex', 'numpy')


def test_a_resumed_training_keeps_the_engine_its_checkpoint_names(
        monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_MATMUL', 'numpy')
    assert isinstance(products_for(200, 1280, 100, 'onnxruntime'),
                      OnnxRuntimeProducts)
    monkeypatch.setenv('SPACER_TRAINING_MATMUL', 'onnxruntime')
    assert isinstance(products_for(200, 1280, 100, 'numpy'), NumpyProducts)
    # A name it does not know (a damaged record) falls back to the rule.
    assert isinstance(products_for(200, 1280, 100, 'mkl'),
                      OnnxRuntimeProducts)


@pytest.mark.parametrize('classes', [2, 6])
def test_steps_on_onnxruntime_train_scikit_learns_classifier(classes):
    # As test_mlp_steps's main test, with the first layer's products in
    # ONNX Runtime: the same classifier up to float32 rounding.
    data = chunks(classes, dim=160)
    plain, fast = first_fit(data, (40,)), first_fit(data, (40,))
    data[-1] = (data[-1][0][:350], data[-1][1][:350])
    steps = MLPSteps(fast, products=OnnxRuntimeProducts())
    for x, y in data[1:]:
        plain.partial_fit(x, y)
        steps.partial_fit(x, y)
    assert steps.products.name == 'onnxruntime'
    for a, b in zip(plain.coefs_ + plain.intercepts_,
                    fast.coefs_ + fast.intercepts_, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.loss_curve_, plain.loss_curve_,
                               rtol=1e-5)
    x = np.concatenate([c[0] for c in chunks(classes, dim=160, seed=9)])
    assert (fast.predict(x) == plain.predict(x)).mean() >= 0.999
    # Its predictions, first layer on ONNX Runtime, are scikit-learn's.
    assert (steps.predict(x) == fast.predict(x)).mean() >= 0.999
