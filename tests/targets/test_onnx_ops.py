"""The ONNX-to-torch conversion operator by operator: graphs written with onnx.helper, each checked against
onnxruntime on random inputs, including the opset-dependent semantics (attributes that became inputs, Softmax's
2-D coercion before opset 13) and shape arithmetic on a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sparring.errors import OnnxConversionError
from sparring.targets.onnx_torch import onnx_to_torch

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)


def const(name: str, arr: np.ndarray | list[int] | list[float], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def ints(name: str, values: list[int]) -> onnx.TensorProto:
    return const(name, values, np.int64)


def model(nodes: list[onnx.NodeProto], in_shape: list[int | str], inits: list[onnx.TensorProto],
          opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def n(op: str, ins: list[str], outs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, **attrs)


def w(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


CASES: dict[str, Callable[[], tuple[onnx.ModelProto, tuple[int, ...]]]] = {
    # Softmax before opset 13 normalises over everything from `axis` on; from 13 over `axis` alone
    "softmax-opset11-coerced": lambda: (model([n("Softmax", ["x"], ["y"], axis=1)], ["b", 3, 4], [], 11), (5, 3, 4)),
    "softmax-opset13-axis": lambda: (model([n("Softmax", ["x"], ["y"], axis=1)], ["b", 3, 4], [], 13), (5, 3, 4)),
    "logsoftmax-clip-inputs": lambda: (model(
        [n("Clip", ["x", "lo", "hi"], ["c"]), n("LogSoftmax", ["c"], ["y"])], ["b", 6],
        [const("lo", -0.5), const("hi", 0.7)], 13), (4, 6)),
    "clip-attrs-opset6": lambda: (model([n("Clip", ["x"], ["y"], min=-0.2, max=0.3)], ["b", 6], [], 6), (4, 6)),
    # torch's x.view(x.size(0), -1) pattern and friends: Shape/Gather/Unsqueeze/Concat/Reshape on a dynamic batch
    "shape-arithmetic": lambda: (model(
        [n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b"], axis=0), n("Unsqueeze", ["b", "ax0"], ["b1"]),
         n("Concat", ["b1", "minus1"], ["shape"], axis=0), n("Reshape", ["x", "shape"], ["y"])],
        ["b", 2, 3, 4], [ints("zero", 0), ints("ax0", [0]), ints("minus1", [-1])], 13), (3, 2, 3, 4)),
    "reshape-zero-copies-a-dim": lambda: (model([n("Reshape", ["x", "s"], ["y"])], ["b", 2, 6],
                                                [ints("s", [0, 3, -1])], 13), (4, 2, 6)),
    "unsqueeze-squeeze-attrs-opset11": lambda: (model(
        [n("Unsqueeze", ["x"], ["u"], axes=[1, -1]), n("Squeeze", ["u"], ["y"], axes=[1])], ["b", 5], [], 11),
        (3, 5)),
    "transpose-slice-concat": lambda: (model(
        [n("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
         n("Slice", ["t", "st", "en", "ax", "sp"], ["s"]), n("Concat", ["s", "s"], ["y"], axis=-1)],
        ["b", 4, 6], [ints("st", [1, -3]), ints("en", [2**63 - 1, 4]), ints("ax", [1, -1]), ints("sp", [2, 1])],
        13), (2, 4, 6)),
    "slice-attrs-opset9": lambda: (model([n("Slice", ["x"], ["y"], starts=[1], ends=[4], axes=[1])], ["b", 6], [], 9),
                                   (3, 6)),
    "gather-tensor-indices": lambda: (model([n("Gather", ["x", "i"], ["y"], axis=1)], ["b", 5, 3],
                                            [ints("i", [[0, -1], [2, 2]])], 13), (2, 5, 3)),
    "gather-scalar-index": lambda: (model([n("Gather", ["x", "i"], ["y"], axis=2)], ["b", 5, 3], [ints("i", 1)],
                                          13), (2, 5, 3)),
    "reduce-mean-sum-max": lambda: (model(
        [n("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0), n("ReduceSum", ["x", "a2"], ["s"], keepdims=0),
         n("ReduceMax", ["x"], ["mx"], axes=[2], keepdims=0), n("Sum", ["m", "s", "mx"], ["y"])],
        ["b", 4, 4], [ints("a2", [2])], 13), (3, 4, 4)),
    "reduce-mean-axes-input-opset18": lambda: (model([n("ReduceMean", ["x", "a"], ["y"], keepdims=1)],
                                                     ["b", 3, 4], [ints("a", [-1])], 18), (2, 3, 4)),
    "gemm-transb0-alpha-beta": lambda: (model([n("Gemm", ["x", "W", "C"], ["y"], alpha=0.5, beta=2.0)], ["b", 4],
                                              [const("W", w(4, 3)), const("C", w(1, 3))], 13), (5, 4)),
    "gemm-transa-runtime": lambda: (model([n("Transpose", ["x"], ["t"]), n("Gemm", ["t", "W"], ["y"], transA=1,
                                                                             transB=1)], ["b", 4],
                                          [const("W", w(3, 4))], 13), (5, 4)),
    "matmul-runtime-both-sides": lambda: (model(
        [n("MatMul", ["x", "W"], ["a"]), n("Transpose", ["a"], ["at"], perm=[0, 2, 1]),
         n("MatMul", ["a", "at"], ["y"])],
        ["b", 3, 4], [const("W", w(4, 4))], 13), (2, 3, 4)),
    "elementwise": lambda: (model(
        [n("Sub", ["x", "c"], ["a"]), n("Div", ["a", "d"], ["b"]), n("Abs", ["b"], ["ab"]),
         n("Pow", ["ab", "p"], ["c2"]), n("Max", ["c2", "x", "b"], ["mx"]), n("Min", ["mx", "ten"], ["mn"]),
         n("Neg", ["mn"], ["ng"]), n("Exp", ["ng"], ["e"]), n("Log", ["e"], ["lg"]), n("Sqrt", ["ab"], ["sq"]),
         n("Mul", ["lg", "sq"], ["ml"]), n("Erf", ["ml"], ["er"]), n("Mean", ["er", "x"], ["y"])],
        ["b", 6], [const("c", w(6)), const("d", 1.5), const("p", 1.5), const("ten", 10.0)], 13), (4, 6)),
    "activations": lambda: (model(
        [n("LeakyRelu", ["x"], ["a"], alpha=0.2), n("Elu", ["a"], ["b"], alpha=0.5), n("Selu", ["b"], ["c"]),
         n("Softplus", ["c"], ["d"]), n("Softsign", ["d"], ["e"]), n("HardSigmoid", ["e"], ["f"], alpha=0.3),
         n("HardSwish", ["f"], ["g"]), n("Tanh", ["g"], ["h"]), n("Sigmoid", ["h"], ["i"]),
         n("Gelu", ["i"], ["j"]), n("Relu", ["j"], ["k"]), n("Add", ["k", "x"], ["y"])],
        ["b", 6], [], 20), (4, 6)),
    "conv-asymmetric-pads-groups-dilation": lambda: (model(
        [n("Conv", ["x", "W", "B"], ["y"], pads=[0, 1, 2, 1], group=2, dilations=[1, 2], strides=[2, 1])],
        ["b", 4, 9, 9], [const("W", w(6, 2, 3, 3)), const("B", w(6))], 13), (2, 4, 9, 9)),
    "conv-same-upper-1d": lambda: (model([n("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER")], ["b", 2, 7],
                                         [const("W", w(3, 2, 4))], 13), (2, 2, 7)),
    "pools": lambda: (model(
        [n("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
         n("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
         n("GlobalAveragePool", ["a"], ["ga"]), n("GlobalMaxPool", ["m"], ["gm"]), n("Add", ["ga", "gm"], ["y"])],
        ["b", 3, 7, 7], [], 13), (2, 3, 7, 7)),
    "avgpool-count-include-pad": lambda: (model(
        [n("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[1, 1], count_include_pad=1)], ["b", 2, 6], [], 13),
        (2, 2, 6)),
    "norms": lambda: (model(
        [n("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["bn"], epsilon=1e-3),
         n("InstanceNormalization", ["bn", "s", "bb"], ["inn"]),
         n("LayerNormalization", ["inn", "ls", "lb"], ["y"], axis=-2)],
        ["b", 3, 4, 5], [const("s", w(3)), const("bb", w(3)), const("mu", w(3)),
                         const("var", np.abs(w(3)) + 0.5), const("ls", w(4, 5)), const("lb", w(4, 5))], 17),
        (2, 3, 4, 5)),
    "pad-flatten-constants-cast": lambda: (model(
        [n("Pad", ["x", "pads", "v"], ["p"], mode="constant"), n("Flatten", ["p"], ["f"], axis=2),
         n("Constant", [], ["k"], value=const("kv", 0.25)), n("Mul", ["f", "k"], ["fk"]),
         n("Cast", ["fk"], ["d"], to=TensorProto.DOUBLE), n("Cast", ["d"], ["y"], to=TensorProto.FLOAT)],
        ["b", 2, 3, 3], [ints("pads", [0, 0, 1, 2, 0, 0, 0, 1]), const("v", 0.5)], 13), (2, 2, 3, 3)),
    "pad-reflect-dropout-identity": lambda: (model(
        [n("Pad", ["x", "pads"], ["p"], mode="reflect"), n("Dropout", ["p"], ["d"]), n("Identity", ["d"], ["y"])],
        ["b", 2, 5], [ints("pads", [0, 0, 2, 0, 0, 1])], 13), (2, 2, 5)),
    "split-tile-expand": lambda: (model(
        [n("Split", ["x", "sp"], ["a", "c"], axis=1), n("Tile", ["a", "rep"], ["t"]), n("Add", ["t", "c"], ["tc"]),
         n("Shape", ["x"], ["s"]), n("Slice", ["s", "z", "one"], ["s0"]), n("Concat", ["s0", "four"], ["shp"], axis=0),
         n("Expand", ["bias", "shp"], ["e"]), n("Add", ["tc", "e"], ["y"])],
        ["b", 6], [ints("sp", [2, 4]), ints("rep", [1, 2]), ints("z", [0]), ints("one", [1]), ints("four", [4]),
                   const("bias", w(4))], 13), (3, 6)),
    "split-equal-opset18": lambda: (model(
        [n("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3), n("Concat", ["c", "a", "b"], ["y"], axis=1)],
        ["b", 7], [], 18), (2, 7)),
    "where-and-comparisons": lambda: (model(
        [n("Greater", ["x", "zero"], ["g"]), n("Less", ["x", "one"], ["l"]), n("And", ["g", "l"], ["gl"]),
         n("Equal", ["x", "x"], ["eq"]), n("Not", ["gl"], ["ng"]), n("Or", ["ng", "eq"], ["o"]),
         n("LessOrEqual", ["x", "one"], ["le"]), n("GreaterOrEqual", ["x", "zero"], ["ge"]),
         n("Neg", ["x"], ["nx"]), n("Where", ["gl", "x", "nx"], ["wh"]), n("Cast", ["o"], ["of"], to=TensorProto.FLOAT),
         n("Cast", ["le"], ["lf"], to=TensorProto.FLOAT), n("Cast", ["ge"], ["gf"], to=TensorProto.FLOAT),
         n("Sum", ["wh", "of", "lf", "gf"], ["y"])],
        ["b", 6], [const("zero", 0.0), const("one", 1.0)], 13), (4, 6)),
    "conv-transpose": lambda: (model(
        [n("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
        ["b", 3, 5, 5], [const("W", w(3, 2, 3, 3)), const("B", w(2))], 13), (2, 3, 5, 5)),
    "constant-of-shape-and-folded-gather": lambda: (model(
        [n("Shape", ["x"], ["s"]), n("ConstantOfShape", ["s"], ["h"], value=const("v", [0.5])),
         n("Gather", ["T", "idx"], ["g"], axis=0), n("ReduceSum", ["g", "ax"], ["gs"], keepdims=1),
         n("Add", ["x", "h"], ["xh"]), n("Add", ["xh", "gs"], ["y"])],
        ["b", 6], [const("T", w(5, 6)), ints("idx", [1, 3]), ints("ax", [0])], 13), (3, 6)),
}


def _ort(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_conversion_matches_onnxruntime(case: str) -> None:
    m, shape = CASES[case]()
    x = RNG.normal(size=shape).astype(np.float32)
    module = onnx_to_torch(m)
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    theirs = _ort(m, x)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    # a different batch size runs through the same module: no shape was baked in
    x2 = RNG.normal(size=(shape[0] + 1, *shape[1:])).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x2)).numpy(), _ort(m, x2), atol=1e-5, rtol=1e-4)


def test_a_graph_that_ignores_its_input_is_refused() -> None:
    m = model([n("Constant", [], ["y"], value=const("v", [1.0, 2.0]))], ["b", 2], [], 13)
    with pytest.raises(Exception, match="does not depend on the input"):
        onnx_to_torch(m)


def test_an_unsupported_attribute_names_the_node() -> None:
    m = model([n("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2], name="pool7")], ["b", 2, 6], [], 13)
    with pytest.raises(OnnxConversionError, match=r"'pool7' \(MaxPool\).*Indices"):
        onnx_to_torch(m)


def test_operators_outside_the_standard_domain_are_named() -> None:
    m = model([n("Relu", ["x"], ["y"])], ["b", 2], [], 13)
    m.graph.node[0].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(OnnxConversionError, match=r"com\.example\.Relu"):
        onnx_to_torch(m)
