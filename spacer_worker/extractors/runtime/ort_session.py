"""How the extraction backend makes its ONNX Runtime sessions.

One thread each, sequential: the backend runs one batch per session
call on each of its streams, side by side, rather than splitting a batch
over threads (``backends`` says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spacer_worker.config import telemetry

if TYPE_CHECKING:
    import onnxruntime


def ort_session(model: bytes, optimize: bool = True,
                save_optimized_to: str | None = None,
                ) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session as the backend runs one: one thread, one
    batch at a time (streams run sessions side by side); ``optimize=False``
    for a graph ONNX Runtime has optimized already, ``save_optimized_to``
    a path to write the optimized graph to."""
    ort = telemetry.onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # also ORT's "hardware specific" warning
    if save_optimized_to is not None:
        options.optimized_model_filepath = save_optimized_to
    return ort.InferenceSession(model, options,
                                providers=['CPUExecutionProvider'])
