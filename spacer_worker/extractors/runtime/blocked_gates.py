"""Keep the squeeze-excite gates in ONNX Runtime's blocked (NCHWc) layout.

ONNX Runtime runs this network's convs in NCHWc: channels in blocks of b
(16 with AVX-512, 8 with AVX2) innermost. Its layout transformer cannot
take the gate's broadcast ``Mul`` ([N, C, H, W] x [N, C, 1, 1]), so around
each of the 16 gates it converts the block's largest map out of the blocked
layout and back: two passes over the biggest tensor of each block, 7-10%
of the forward pass on one core here (9.6-10.0 -> 8.9 ms per patch; two
streams: 0.90-0.95 -> 0.86-0.88 s per 200 patches).

In blocked memory an [N, C, H, W] map is [N, C/b, H, W, b] and the gate is
[N, C/b, 1, 1, b], so the multiply can be done right there: ``Reshape``
views of the blocked map, the gate repeated along W first (a few KB), so
ONNX Runtime's broadcast runs over rows of W * b values, not b at a time.
The gate vector itself ([N, C, 1, 1], C a multiple of b) is the same
memory in either layout, so its own reorder is left out too.

The rewrite edits ONNX Runtime's own optimized graph, which is specific to
this CPU and this ONNX Runtime, so it is made where it runs and checked
there: the edited model must give the plain model's output bit for bit
on a probe batch (the same products in the same order), or it is not used.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

# The NCHWc block sizes MLAS uses (AVX-512, AVX2), largest first; which one
# applies is read from ONNX Runtime's graph (_block_size), then checked.
_BLOCK_SIZES = (16, 8)


class BlockedGates(NamedTuple):
    model: bytes  # ONNX Runtime's optimized graph, gates rewritten
    session: Any  # a session on it, checked against the plain model


def blocked_gate_model(model: bytes, probe: dict[str, np.ndarray],
                       session: Callable[[bytes, bool], Any]
                       ) -> BlockedGates | None:
    """``model`` with every gate multiplied in the blocked layout, or None
    where ONNX Runtime's graph does not have the expected form here.

    ``session(edited, False)`` makes the session the edited graph runs
    in (the caller's options, no graph optimizations: it is optimized
    already); ``probe`` feeds it and the plain model once.
    """
    import onnx

    shapes = _mul_output_shapes(model)
    optimized, plain = _optimized(model)
    graph = onnx.load_from_string(optimized)
    del optimized
    block = _block_size(graph.graph)
    if block is None or _rewrite_gates(graph.graph, shapes, block) == 0:
        return None
    edited = graph.SerializeToString()
    del graph  # one copy of the weights fewer while the sessions load
    expected = plain.run(None, probe)
    del plain
    try:
        checked = session(edited, False)
        got = checked.run(None, probe)
    except Exception as e:  # noqa: BLE001 - a graph this ORT refuses
        logger.info('ONNX Runtime refused its graph with blocked gates '
                    '(%s); the plain graph runs.', e)
        return None
    # equal_nan: weights whose probe output overflows are no reason to
    # refuse the same arithmetic.
    if not all(np.array_equal(a, b, equal_nan=True)
               for a, b in zip(expected, got, strict=True)):
        logger.info('ONNX Runtime gates stay in its own layout here: the '
                    'blocked form did not reproduce the plain model '
                    'exactly.')
        return None
    return BlockedGates(edited, checked)


def _block_size(graph) -> int | None:
    """The NCHWc block ONNX Runtime chose: its blocked convs' weights have
    output channels padded to a multiple of it (None: no blocked convs)."""
    weights = {t.name: t.dims for t in graph.initializer}
    outputs = [weights[n.input[1]][0] for n in graph.node
               if n.domain == 'com.microsoft.nchwc' and n.op_type == 'Conv'
               and n.input[1] in weights]
    for block in _BLOCK_SIZES:
        if outputs and all(channels % block == 0 for channels in outputs):
            return block
    return None


def _optimized(model: bytes) -> tuple[bytes, Any]:
    """ONNX Runtime's fully optimized graph of ``model``, as it saves it,
    and the session it optimized it for (the plain model, ready to run)."""
    from spacer_worker.extractors.runtime.ort_session import ort_session

    with tempfile.TemporaryDirectory(prefix='spacer-ort-') as folder:
        path = os.path.join(folder, 'optimized.onnx')
        plain = ort_session(model, save_optimized_to=path)
        with open(path, 'rb') as f:
            return f.read(), plain


def _mul_output_shapes(model: bytes) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of every 4-D Mul output of the plain graph, by name."""
    import onnx
    from onnx import helper, shape_inference

    # Inferred without the weights' values (only their shapes count):
    # inference on the whole model copies it several times (+45 MB here).
    # Integer constants (a Slice's bounds) stay: shapes follow from them.
    bare = onnx.load_from_string(model)
    graph = bare.graph
    weights = [t for t in graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT]
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type,
                                                     t.dims)
                       for t in weights)
    kept = [t for t in graph.initializer
            if t.data_type != onnx.TensorProto.FLOAT]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inferred = shape_inference.infer_shapes(bare).graph
    muls = {n.output[0] for n in inferred.node if n.op_type == 'Mul'}
    shapes = {}
    for value in inferred.value_info:
        dims = value.type.tensor_type.shape.dim
        if value.name in muls and len(dims) == 4 and all(
                d.HasField('dim_value') for d in dims[1:]):
            shapes[value.name] = tuple(d.dim_value for d in dims[1:])
    return shapes


def _rewrite_gates(graph, shapes: dict[str, tuple[int, int, int]],
                   block: int) -> int:
    """Replace each ReorderOutput -> Mul(gate) -> ReorderInput chain by a
    multiply on blocked views; return how many were replaced."""
    from onnx import helper, numpy_helper

    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    dropped: set[int] = set()
    replaced: dict[int, list] = {}
    for node in graph.node:
        if node.op_type != 'Mul' or node.domain or \
                node.output[0] not in shapes:
            continue
        x, gate = node.input
        unblock = producer.get(x)
        users = consumers.get(node.output[0], [])
        if unblock is None or unblock.op_type != 'ReorderOutput' or \
                len(consumers[x]) != 1 or len(users) != 1 or \
                users[0].op_type != 'ReorderInput':
            continue
        channels, height, width = shapes[node.output[0]]
        if channels % block or _attribute(unblock, 'channels') != channels:
            continue
        key = f'blocked_gate_{len(replaced)}'

        def dims(suffix: str, values: list[int], key: str = key) -> str:
            name = f'{key}_{suffix}_dims'
            graph.initializer.append(numpy_helper.from_array(
                np.array(values, np.int64), name))
            return name

        groups = channels // block
        dropped.update((id(unblock), id(users[0])))
        source = _gate_reorder(gate, producer, consumers, channels)
        if source is not None:
            # The gate is [N, C, 1, 1]: with C a multiple of the block its
            # blocked form is the same memory, so it needs no reorder.
            dropped.add(id(source))
            for user in consumers[source.output[0]]:
                user.input[list(user.input).index(source.output[0])] = \
                    source.input[0]
        replaced[id(node)] = [
            # 0: keep the batch dimension as it is.
            helper.make_node('Reshape', [unblock.input[0], dims(
                'map', [0, groups, height, width, block])], [f'{key}_map']),
            helper.make_node('Reshape', [gate, dims(
                'gate', [0, groups, 1, 1, block])], [f'{key}_gate']),
            helper.make_node('Expand', [f'{key}_gate', dims(
                'row', [1, 1, 1, width, 1])], [f'{key}_row']),
            helper.make_node('Mul', [f'{key}_map', f'{key}_row'],
                             [f'{key}_product']),
            helper.make_node('Reshape', [f'{key}_product', dims(
                'blocked', [0, channels, height, width])],
                users[0].output[:1]),
        ]
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


def _gate_reorder(gate: str, producer: dict, consumers: dict,
                  channels: int):
    """The ReorderOutput that the gate's sigmoid (elementwise nodes on
    [N, C, 1, 1]) starts from, if it can be left out, else None."""
    name = gate
    for _ in range(4):  # Reciprocal <- Add <- Exp [<- Neg]
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == 'ReorderOutput':
            if _attribute(node, 'channels') == channels and \
                    len(consumers[node.output[0]]) == 1:
                return node
            return None
        if node.op_type not in ('Reciprocal', 'Add', 'Exp', 'Neg') or \
                node.domain:
            return None
        inputs = [i for i in node.input if i in producer]
        if len(inputs) != 1:
            return None
        name = inputs[0]
    return None


def _attribute(node, name: str) -> int | None:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return None
