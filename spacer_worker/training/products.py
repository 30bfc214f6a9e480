"""The two large matrix products of a float32 MLP step, on the faster engine.

Four fifths of a step (``training.mlp_steps``) are two products with the
batch: the first layer's activations ``x @ W`` (200 x 1280 x 100) and its
weight gradient ``x.T @ delta``. NumPy hands them to OpenBLAS, whose
kernels are fixed when it loads (by CPU model, or by OPENBLAS_CORETYPE);
ONNX Runtime's MLAS picks its own by the CPU's instruction sets. Which one
is faster depends on the machine: on a 2-core AMD EPYC whose environment
pins OpenBLAS to its AVX2 'Haswell' kernels, MLAS takes 0.28 ms per
product and OpenBLAS 0.57 ms; on a 2-core Sapphire Rapids Xeon they are
even on one thread, and OpenBLAS on the steps' two threads takes 0.41 ms
per step's pair against MLAS's 0.69 (MLAS runs single-threaded here: its
own pool is slower on these shapes). So a training measures both as the
steps run them (``threads.step_threads``; once per process and shape,
~40 ms) and keeps the faster; TRAINING_MATMUL can name one.

Both compute in float32 with float32 accumulation; they sum in different
orders, so the results differ in the last bits, as two BLAS builds do.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from importlib import resources
from typing import Any, Protocol

import numpy as np

from spacer_worker import config
from spacer_worker.exceptions import ConfigError
from spacer_worker.training.threads import step_threads

logger = logging.getLogger(__name__)

ENGINES = ('auto', 'numpy', 'onnxruntime')
# Below this many multiply-adds per product a call's fixed cost (~10 us in
# ONNX Runtime) outweighs any kernel difference: NumPy, unmeasured.
MEASURE_FROM = 2_000_000
_TIMED_RUNS = 12
_MAX_BINDINGS = 16


class Products(Protocol):
    name: str

    def forward(self, x: np.ndarray, w: np.ndarray, out: np.ndarray
                ) -> None:
        """out = x @ w"""

    def weight_grad(self, x: np.ndarray, delta: np.ndarray,
                    out: np.ndarray) -> None:
        """out = x.T @ delta"""


class NumpyProducts:
    name = 'numpy'

    def forward(self, x: np.ndarray, w: np.ndarray, out: np.ndarray
                ) -> None:
        np.matmul(x, w, out=out)

    def weight_grad(self, x: np.ndarray, delta: np.ndarray,
                    out: np.ndarray) -> None:
        np.matmul(x.T, delta, out=out)


def onnxruntime_available() -> bool:
    try:  # a probe: is the optional ONNX Runtime installed?
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


MODEL_FILES = {False: 'gemm_nn.onnx', True: 'gemm_tn.onnx'}


def build_gemm_model(trans_a: bool) -> bytes:
    """One Gemm node, any shapes: Y = op(A) @ B, op transposing when
    ``trans_a``. Written once into the package (scripts/make-gemm-models.py)
    and read from there: importing onnx costs a worker 0.7 s and 12 MB."""
    from onnx import TensorProto, helper

    def matrix(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                             ['rows', 'cols'])
    node = helper.make_node('Gemm', ['A', 'B'], ['Y'], transA=int(trans_a))
    graph = helper.make_graph([node], 'product', [matrix('A'), matrix('B')],
                              [matrix('Y')])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 17)]).SerializeToString()


def gemm_model(trans_a: bool) -> bytes:
    """The packaged model :func:`build_gemm_model` wrote."""
    return (resources.files(__package__) / MODEL_FILES[trans_a]).read_bytes()


_sessions: dict[bool, Any] = {}
_sessions_pid = 0
_sessions_lock = threading.Lock()


def _gemm_sessions() -> dict[bool, Any]:
    # Made once per process (~40 ms each) and shared: a session runs from
    # several threads at once; bindings are per engine object.
    global _sessions_pid
    with _sessions_lock:
        if _sessions_pid != os.getpid():  # none yet, or forked
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.enable_cpu_mem_arena = False  # outputs are the caller's
            options.log_severity_level = 3
            _sessions.clear()
            _sessions.update({
                trans_a: ort.InferenceSession(
                    gemm_model(trans_a), options,
                    providers=['CPUExecutionProvider'])
                for trans_a in (False, True)})
            _sessions_pid = os.getpid()
        return dict(_sessions)


class OnnxRuntimeProducts:
    """The products as one-node ONNX Runtime sessions on one thread.

    Inputs and the output are bound to the caller's arrays (no copies);
    the weights' and output's bindings are kept per array, so a step only
    binds its new batch (~1 us).
    """

    name = 'onnxruntime'

    def __init__(self) -> None:
        self._sessions = _gemm_sessions()
        self._bindings: dict[tuple, tuple[Any, np.ndarray, np.ndarray]] = {}

    def forward(self, x: np.ndarray, w: np.ndarray, out: np.ndarray
                ) -> None:
        self._run(False, x, w, out)

    def weight_grad(self, x: np.ndarray, delta: np.ndarray,
                    out: np.ndarray) -> None:
        self._run(True, x, delta, out)

    def _run(self, trans_a: bool, a: np.ndarray, b: np.ndarray,
             out: np.ndarray) -> None:
        if not all(m.dtype == np.float32 and m.flags.c_contiguous
                   for m in (a, b, out)):
            raise ValueError('ONNX Runtime products need C-ordered float32 '
                             'arrays')
        key = (trans_a, b.ctypes.data, b.shape, out.ctypes.data, out.shape)
        entry = self._bindings.get(key)
        if entry is None:
            if len(self._bindings) >= _MAX_BINDINGS:
                self._bindings.clear()
            binding = self._sessions[trans_a].io_binding()
            binding.bind_cpu_input('B', b)
            binding.bind_output('Y', 'cpu', 0, np.float32, list(out.shape),
                                out.ctypes.data)
            # The arrays stay referenced while their binding is kept.
            entry = self._bindings[key] = (binding, b, out)
        binding = entry[0]
        binding.bind_cpu_input('A', a)
        self._sessions[trans_a].run_with_iobinding(binding)


# Engine name per shape, measured once per process; each training gets its
# own engine object (its bindings are not shared between threads).
_chosen: dict[tuple[int, int, int], str] = {}
_lock = threading.Lock()
_ENGINES: dict[str, type] = {'numpy': NumpyProducts,
                             'onnxruntime': OnnxRuntimeProducts}


def engine_setting() -> str:
    value = (config.get('TRAINING_MATMUL') or 'auto').strip().lower()
    if value not in ENGINES:
        raise ConfigError(f"TRAINING_MATMUL={value!r}: expected one of "
                          f"{', '.join(ENGINES)}.")
    if value == 'onnxruntime' and not onnxruntime_available():
        raise ConfigError("TRAINING_MATMUL=onnxruntime but onnxruntime is "
                          "not installed: pip install "
                          "'spacer_worker[worker]'.")
    return value


def products_for(rows: int, dim: int, width: int) -> Products:
    """An engine for a step's first-layer products (``rows x dim`` batch,
    ``dim x width`` weights): the setting's, or the faster one measured."""
    name = engine_setting()
    if name == 'auto':
        if rows * dim * width < MEASURE_FROM or not onnxruntime_available():
            name = 'numpy'
        else:
            with _lock:
                key = (rows, dim, width)
                if key not in _chosen:
                    _chosen[key] = _faster(rows, dim, width)
                name = _chosen[key]
    return _ENGINES[name]()


def _faster(rows: int, dim: int, width: int) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((rows, dim), dtype=np.float32)
    w = rng.random((dim, width), dtype=np.float32)
    delta = rng.random((rows, width), dtype=np.float32)
    hidden = np.empty((rows, width), dtype=np.float32)
    grad = np.empty((dim, width), dtype=np.float32)
    engines: list[Products] = [NumpyProducts(), OnnxRuntimeProducts()]
    runs: list[list[float]] = [[] for _ in engines]
    with step_threads():  # as the steps run
        # Alternated, so a burst of load elsewhere hits both alike; the
        # first round warms caches and bindings.
        for round_ in range(_TIMED_RUNS + 1):
            for engine, times in zip(engines, runs, strict=True):
                t0 = time.perf_counter()
                engine.forward(x, w, hidden)
                engine.weight_grad(x, delta, grad)
                if round_:
                    times.append(time.perf_counter() - t0)
    medians = [float(np.median(times)) for times in runs]
    best = engines[int(np.argmin(medians))].name
    logger.info("MLP products (%d x %d x %d) on %s: numpy %.2f ms, "
                "onnxruntime %.2f ms per step", rows, dim, width, best,
                medians[0] * 1e3, medians[1] * 1e3)
    return best
