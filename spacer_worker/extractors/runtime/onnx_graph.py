"""The folded network written out as an ONNX graph, for ONNX Runtime on CPU.

ONNX Runtime runs this network about 1.5x faster than eager PyTorch on a
small CPU, and its speed does not depend on the malloc in use. The graph is
written node by node from the folded parameters (milliseconds, no tracing,
no torch.onnx exporter): Conv's ``pads`` attribute expresses the lopsided
stride-2 'SAME' padding directly.

The whole network is in the graph, from the uint8 patches on: the stem's
batch norm and the 1/255 scaling are folded into its conv (in float64),
so nothing runs in PyTorch per batch.

Precision, measured against a float64 run of PySpacer's network
(``benchmarks/extraction.py``, ``tests/extraction/test_fidelity.py``):

* Means are taken in two stages (an AveragePool over k x k tiles, then the
  mean of the tiles). ONNX Runtime's GlobalAveragePool sums a whole
  112 x 112 map in one float32 running sum; where a channel is nearly
  constant and large (saturated content: white areas, 16-bit images that
  Pillow clips to 255) that sum loses about n * 2^-24 relative, the
  squeeze-excite gates multiply the error into every channel, and features
  came out 20-40x farther from float64 than PySpacer's. Short sums keep
  the error at PySpacer's level; AveragePool runs in the same blocked
  layout as the convs, so it costs no layout change.
* The squeeze-excite gate is spelled with Exp rather than Sigmoid, whose
  approximation in ONNX Runtime is coarse for a value that scales a whole
  channel; swish uses Sigmoid (see ``silu``).
"""

from __future__ import annotations

import math

import numpy as np

from spacer_worker.extractors.runtime.architecture import (
    CROP_SIZE,
    FEATURE_DIM,
    same_padding,
)
from spacer_worker.extractors.runtime.folded import (
    Conv,
    FoldedNetwork,
    Linear,
    scaled_stem,
)

INPUT_NAME = 'patches'
OUTPUT_NAME = 'features'
OPSET = 17
INPUT_SHAPE = (CROP_SIZE, CROP_SIZE, 3)  # uint8 NHWC, as patches are cut
# Patches may also come with a fourth byte per pixel (patches.py, rgbx),
# which the graph drops: the input's channel count is left open.
INPUT_CHANNELS = 'channels'


class _GraphWriter:
    def __init__(self) -> None:
        # Lazy: onnx/onnxruntime load only when the ONNX backend is chosen.
        from onnx import helper, numpy_helper
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0
        self.ones: dict[int, str] = {}  # the gates' 1, by channel count

    def name(self, prefix: str) -> str:
        self.count += 1
        return f'{prefix}_{self.count}'

    def constant(self, array: np.ndarray) -> str:
        name = self.name('param')
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def int64s(self, values: list[int]) -> str:
        name = self.name('param')
        self.initializers.append(self.numpy_helper.from_array(
            np.array(values, np.int64), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [output],
                                                **attrs))
        return output

    def conv(self, x: str, conv: Conv) -> str:
        kernel, stride = conv.kernel, conv.stride
        left, right, top, bottom = same_padding(kernel, stride)
        inputs = [x, self.constant(conv.weight)]
        if conv.bias is not None:
            inputs.append(self.constant(conv.bias))
        return self.op('Conv', inputs, kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[top, left, bottom, right],
                       group=conv.groups)

    def linear_1x1(self, x: str, linear: Linear, sign: float = 1.0
                   ) -> str:
        weight = linear.weight[:, :, None, None]
        bias = linear.bias
        return self.op('Conv', [x, self.constant(sign * weight),
                                self.constant(sign * bias)],
                       kernel_shape=[1, 1])

    def mean(self, x: str, size: int) -> str:
        """[N, C, size, size] -> [N, C, 1, 1], summing short runs only."""
        tile = tile_size(size)
        if tile > 1:
            x = self.op('AveragePool', [x], kernel_shape=[tile, tile],
                        strides=[tile, tile])
        return self.op('GlobalAveragePool', [x])

    def gate(self, x: str, linear: Linear) -> str:
        """sigmoid(linear(x)), spelled 1 / (1 + exp(-linear(x))).

        Not ONNX Runtime's Sigmoid: its fast approximation drifts up to
        ~1e-4 from PyTorch over the 65 activations of this network. The
        minus is folded into the weights (negating is exact, so the conv
        gives -linear(x) bit for bit): one node fewer per gate.
        """
        channels = int(linear.weight.shape[0])
        if channels not in self.ones:
            # Shaped as the gate: ONNX Runtime adds a broadcast scalar to a
            # [N, C, 1, 1] tensor 20-40x slower than a [1, C, 1, 1] one
            # (10-40 us against 0.5-0.9, 16 gates per patch).
            self.ones[channels] = self.constant(
                np.ones((1, channels, 1, 1), np.float32))
        minus = self.linear_1x1(x, linear, sign=-1.0)
        return self.op('Reciprocal', [
            self.op('Add', [self.op('Exp', [minus]), self.ones[channels]])])

    def silu(self, x: str) -> str:
        # Swish runs on the big activation maps, where four elementwise
        # passes (Neg, Exp, Add, Div) cost ~30% of the whole network; the
        # two of Sigmoid + Mul stay as close to float64 as PyTorch (the
        # gate, above, stays exact: its error is multiplied into every
        # channel).
        return self.op('Mul', [x, self.op('Sigmoid', [x])])


def tile_size(size: int) -> int:
    """The divisor of ``size`` nearest its square root (1 for small maps):
    a mean over k x k tiles, then over (size/k)^2 tiles, has the shortest
    float32 running sums."""
    if size <= 8:
        return 1
    return min((k for k in range(1, size + 1) if size % k == 0),
               key=lambda k: (abs(k - math.sqrt(size)), k))


# The network is run as two graphs: the blocks on 112-28 px maps, one patch
# at a time, then the 14 and 7 px blocks on a whole batch. The early maps
# are megabytes per patch and stay in cache only one patch at a time; the
# late convs are small matrices whose weights are better read once for
# several patches. Measured with 2 streams on 2 cores
# (``benchmarks/extraction.py``): ~5% faster than either batch size for the
# whole network, with the same features (the same kernels; bit-identical
# on the machine measured).
SPLIT_BLOCK = 8
ACTIVATION_NAME = 'activations'


def build_onnx_model(net: FoldedNetwork) -> bytes:
    """Serialized ONNX model: ``patches`` (uint8 [N, 224, 224, 3], as
    cropped, or [N, 224, 224, 4] with a byte it ignores) -> ``features``
    (float32 [N, 1280])."""
    return _build(net, 0, len(net.blocks))


def build_split_models(net: FoldedNetwork, split: int = SPLIT_BLOCK
                       ) -> tuple[bytes, bytes]:
    """The same network as two models: ``patches`` -> ``activations``
    (the input of block ``split``), and ``activations`` -> ``features``.
    Chained they give exactly what ``build_onnx_model``'s model gives."""
    if not 0 < split < len(net.blocks):
        raise ValueError(f'split block {split} is not inside the network '
                         f'(1..{len(net.blocks) - 1})')
    return _build(net, 0, split), _build(net, split, len(net.blocks))


def _map_size(net: FoldedNetwork, block: int) -> int:
    size = CROP_SIZE // 2
    for b in net.blocks[:block]:
        size //= b.depthwise.stride
    return size


def _build(net: FoldedNetwork, first: int, end: int) -> bytes:
    # Lazy: onnx/onnxruntime load only when the ONNX backend is chosen.
    from onnx import TensorProto

    g = _GraphWriter()
    size = _map_size(net, first)
    if first == 0:
        planes = g.op('Transpose', [INPUT_NAME], perm=[0, 3, 1, 2])
        # R, G, B: the first three planes, one contiguous run per patch.
        rgb = g.op('Slice', [planes, g.int64s([0]), g.int64s([3]),
                             g.int64s([1])])
        x = g.op('Cast', [rgb], to=TensorProto.FLOAT)
        x = g.silu(g.conv(x, scaled_stem(net)))
        graph_input = g.helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.UINT8,
            ['batch', *INPUT_SHAPE[:2], INPUT_CHANNELS])
    else:
        x = ACTIVATION_NAME
        channels = net.blocks[first - 1].project.out_channels
        graph_input = g.helper.make_tensor_value_info(
            ACTIVATION_NAME, TensorProto.FLOAT, ['batch', channels, size, size])
    for block in net.blocks[first:end]:
        inputs = x
        if block.expand is not None:
            x = g.silu(g.conv(x, block.expand))
        x = g.silu(g.conv(x, block.depthwise))
        size //= block.depthwise.stride
        gate = g.mean(x, size)
        gate = g.silu(g.linear_1x1(gate, block.se_reduce))
        gate = g.gate(gate, block.se_expand)
        x = g.conv(g.op('Mul', [x, gate]), block.project)
        if block.spec.residual:
            x = g.op('Add', [x, inputs])
    if end == len(net.blocks):
        x = g.mean(g.silu(g.conv(x, net.head)), size)
        g.nodes.append(g.helper.make_node('Flatten', [x], [OUTPUT_NAME], axis=1))
        graph_output = g.helper.make_tensor_value_info(
            OUTPUT_NAME, TensorProto.FLOAT, ['batch', FEATURE_DIM])
    else:
        g.nodes.append(g.helper.make_node('Identity', [x], [ACTIVATION_NAME]))
        channels = net.blocks[end - 1].project.out_channels
        graph_output = g.helper.make_tensor_value_info(
            ACTIVATION_NAME, TensorProto.FLOAT, ['batch', channels, size, size])
    graph = g.helper.make_graph(
        g.nodes, 'efficientnet_b0_features', [graph_input], [graph_output],
        g.initializers)
    model = g.helper.make_model(
        graph, opset_imports=[g.helper.make_opsetid('', OPSET)],
        producer_name='spacer_worker')
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    return model.SerializeToString()
