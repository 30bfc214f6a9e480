"""The two large matrix products of a float32 MLP step, on one engine.

Four fifths of a step (``training.mlp_steps``) are two products with the
batch: the first layer's activations ``x @ W`` (200 x 1280 x 100) and its
weight gradient ``x.T @ delta``. NumPy hands them to OpenBLAS, whose
kernels are fixed when it loads (by CPU model, or by OPENBLAS_CORETYPE);
ONNX Runtime's MLAS picks its own by the CPU's instruction sets. Both
compute in float32 with float32 accumulation but sum in different orders,
so their results differ in the last bits, and a training's classifier with
them.

The engine is therefore chosen by a rule, never by a timing race: two
trainings of one message on one machine, and a training resumed from its
checkpoint, take the same products and end with the same classifier. The
rule (``auto``) reads the problem's shape and the machine's build only:

* products under ``LARGE_FROM`` multiply-adds, or no ONNX Runtime: NumPy;
* a CPU with AVX-512 whose OpenBLAS runs kernels without it (a core type
  pinned to 'Haswell', or an AVX2-only build): MLAS, which uses AVX-512
  there (on a 2-core AMD EPYC pinned to Haswell kernels, 0.28 ms per
  product against OpenBLAS's 0.57);
* otherwise NumPy: where OpenBLAS runs AVX-512 kernels the two are even on
  one thread (2.14 ms against 2.11 per step on a Sapphire Rapids Xeon),
  and OpenBLAS alone uses the steps' second thread.

A checkpoint records the engine its training used; the run that resumes it
takes that engine, whatever its own machine's rule says.
TRAINING_MATMUL can name one engine for every training.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from importlib import resources
from typing import Any, Protocol

import numpy as np

from spacer_worker import config
from spacer_worker.config import telemetry
from spacer_worker.exceptions import ConfigError
from spacer_worker.training.threads import numpy_blas_architecture

logger = logging.getLogger(__name__)

ENGINES = ('auto', 'numpy', 'onnxruntime')
# Below this many multiply-adds per product a call's fixed cost (~10 us in
# ONNX Runtime) outweighs any kernel difference: NumPy.
LARGE_FROM = 2_000_000
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
        telemetry.onnxruntime()
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
            ort = telemetry.onnxruntime()
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


_ENGINES: dict[str, type] = {'numpy': NumpyProducts,
                             'onnxruntime': OnnxRuntimeProducts}
# OpenBLAS core types whose kernels use AVX-512.
_AVX512_CORES = frozenset({'skylakex', 'cooperlake', 'sapphirerapids'})


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


def products_for(rows: int, dim: int, width: int,
                 engine: str | None = None) -> Products:
    """An engine for a step's first-layer products (``rows x dim`` batch,
    ``dim x width`` weights): ``engine`` when it names one (a resumed
    training's, from its checkpoint), else the setting's, else the
    rule's."""
    if engine in _ENGINES:
        return _ENGINES[_resumed(engine)]()
    name = engine_setting()
    if name == 'auto':
        name = auto_engine(rows, dim, width)
    return _ENGINES[name]()


def auto_engine(rows: int, dim: int, width: int) -> str:
    """The rule of ``auto`` (module docstring): the shape and this
    machine's build decide, the same in every process."""
    if rows * dim * width < LARGE_FROM or not onnxruntime_available():
        return 'numpy'
    return 'onnxruntime' if _mlas_kernels_are_wider() else 'numpy'


@functools.cache
def _mlas_kernels_are_wider() -> bool:
    # Whether MLAS would use AVX-512 where OpenBLAS does not (a BLAS whose
    # kernels cannot be told, MKL's say, keeps NumPy).
    avx512 = _cpu_has('avx512f')
    core = numpy_blas_architecture()
    wider = avx512 and bool(core) and core not in _AVX512_CORES
    logger.info("MLP products: CPU %s AVX-512, OpenBLAS kernels %r: large "
                "products on %s", 'with' if avx512 else 'without',
                core or 'unknown', 'onnxruntime' if wider else 'numpy')
    return wider


def _cpu_has(flag: str) -> bool:
    # Linux's CPU flags; elsewhere the flag counts as absent (NumPy).
    try:
        with open('/proc/cpuinfo', encoding='ascii', errors='replace') as f:
            for line in f:
                if line.startswith('flags'):
                    return flag in line.split(':', 1)[1].split()
    except OSError:
        pass
    return False


def _resumed(engine: str) -> str:
    if engine == 'onnxruntime' and not onnxruntime_available():
        logger.warning("This training's checkpoint was trained with ONNX "
                       "Runtime's products, which this worker lacks; it "
                       "goes on with NumPy's, so its classifier may differ "
                       "in the last bits from an uninterrupted run's.")
        return 'numpy'
    return engine
