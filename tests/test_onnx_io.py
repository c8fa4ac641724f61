"""``read_onnx`` keeps the layers' parameters of a graph and nothing else: a MatMul's matrix (in PyTorch's (out,
in) layout) and the bias added after it, not a scalar that scales the input nor a Reshape's shape."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jaxcnn.weights.onnx_io import read_onnx


def test_matmul_and_its_bias_are_kept_scalars_and_shapes_are_not(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)         # ONNX's MatMul: (in, out)
    b = rng.standard_normal(4).astype(np.float32)
    inits = [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(b, "fc_b"),
             numpy_helper.from_array(np.float32(2.0), "scale"), numpy_helper.from_array(np.int64([1, 6]), "shape")]
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"]),
             helper.make_node("Reshape", ["scaled", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc_w"], ["prod"]),
             helper.make_node("Add", ["prod", "fc_b"], ["y"])]
    graph = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    path = tmp_path / "fc.onnx"
    onnx.save(helper.make_model(graph), path)
    got = read_onnx(path)
    assert sorted(got) == ["fc_b", "fc_w"]
    np.testing.assert_array_equal(got["fc_w"], w.T)
    np.testing.assert_array_equal(got["fc_b"], b)
