"""A synthetic BVLC GoogLeNet as the ONNX model zoo publishes it: the graph and Caffe2's blob names.

``bvlc_googlenet(seed)`` builds the network of BVLC's ``deploy.prototxt`` (the layers, widths, pads,
strides, Caffe's LRN and ceil-mode max pools; the zoo's ``googlenet-*.onnx`` expresses the ceil mode as
asymmetric pads, here ``ceil_mode=1``) with weights drawn from ``seed``: He-scaled kernels and small
biases, so that activations of Caffe's 0..255 input reach the hundreds and the LRN layers matter. Two
departures from the zoo's file, both equal at 224 px: the 7x7 average pool is a global one (the tests run
at 64 px), and the classifier reads a ``Reshape`` of it. An int64 shape constant feeds that ``Reshape``, as
in the zoo's file, so that a reader must tell parameters from constants.

Shared by ``tests/refs/make_inception_v1_refs.py`` (which evaluates the graph with ``onnx.reference``) and
``tests/test_inception_v1.py`` (which writes it and loads it with ``jaxcnn.load_pretrained``).
"""

from __future__ import annotations

import numpy as np

# BVLC's deploy.prototxt: Inception module -> (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj); pools between
LAYOUT = (("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), "pool3",
          ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
          ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
          ("4e", (256, 160, 320, 32, 128, 128)), "pool4",
          ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)))
# graph values stored as references, with the jaxcnn feature each one is
FEATURES = {"pool1/norm1": "localresponsenorm0", "conv2/norm2": "localresponsenorm1",
            "inception_3a/output": "mixed3a", "inception_4e/output": "mixed4e", "pool5": "avgpool0"}


def bvlc_googlenet(seed: int = 0, classes: int = 1000):
    """The ONNX ModelProto (input ``data_0`` NCHW, outputs ``prob_0`` (the logits) and ``FEATURES``)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(name, shape):
        if len(shape) == 1:
            value = rng.uniform(-0.1, 0.3, shape)
        else:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))

    def conv(x, name, cin, cout, k, stride=1, pad=0):
        param(f"{name}_w_0", (cout, cin, k, k))
        param(f"{name}_b_0", (cout,))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w_0", f"{name}_b_0"], [f"{name}_pre"],
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}_pre"], [name]))
        return name

    def max_pool(x, name, stride=2, pad=0):
        nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[3, 3], strides=[stride, stride],
                                      pads=[pad] * 4, ceil_mode=int(stride > 1)))
        return name

    def lrn(x, name):
        nodes.append(helper.make_node("LRN", [x], [name], size=5, alpha=1e-4, beta=0.75, bias=1.0))
        return name

    x = conv("data_0", "conv1/7x7_s2", 3, 64, 7, 2, 3)
    x = lrn(max_pool(x, "pool1/3x3_s2"), "pool1/norm1")
    x = conv(x, "conv2/3x3_reduce", 64, 64, 1)
    x = conv(x, "conv2/3x3", 64, 192, 3, 1, 1)
    x = max_pool(lrn(x, "conv2/norm2"), "pool2/3x3_s2")
    cin = 192
    for item in LAYOUT:
        if isinstance(item, str):
            x = max_pool(x, f"{item}/3x3_s2")
            continue
        stage, (c1, c3r, c3, c5r, c5, cp) = item
        n = f"inception_{stage}"
        branches = [conv(x, f"{n}/1x1", cin, c1, 1),
                    conv(conv(x, f"{n}/3x3_reduce", cin, c3r, 1), f"{n}/3x3", c3r, c3, 3, 1, 1),
                    conv(conv(x, f"{n}/5x5_reduce", cin, c5r, 1), f"{n}/5x5", c5r, c5, 5, 1, 2),
                    conv(max_pool(x, f"{n}/pool", 1, 1), f"{n}/pool_proj", cin, cp, 1)]
        x = f"{n}/output"
        nodes.append(helper.make_node("Concat", branches, [x], axis=1))
        cin = c1 + c3 + c5 + cp
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool5"]))
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "OC2_DUMMY_1"))
    nodes.append(helper.make_node("Reshape", ["pool5", "OC2_DUMMY_1"], ["pool5/flat"]))
    param("loss3/classifier_w_0", (classes, 1024))
    param("loss3/classifier_b_0", (classes,))
    nodes.append(helper.make_node("Gemm", ["pool5/flat", "loss3/classifier_w_0", "loss3/classifier_b_0"], ["prob_0"],
                                  transB=1))
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "bvlc_googlenet", [value("data_0")],
                              [value("prob_0"), *map(value, FEATURES)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def caffe_input(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB in [0, 1] -> Caffe's NCHW BGR 0..255 minus BVLC's mean (104, 117, 123)."""
    bgr = pixels[..., ::-1].astype(np.float64) * 255.0 - np.array([104.0, 117.0, 123.0])
    return np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)).astype(np.float32)
