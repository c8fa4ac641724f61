"""The weights of an ONNX model as a state dict, read with the ``onnx`` package (an optional extra).

``read_onnx(path)`` returns the initializers that are the parameters of the graph's layers (inputs of
``Conv``, ``Gemm``, ``MatMul``, ``BatchNormalization``, and the ``Add`` of a bias after a ``MatMul``), keyed
by their ONNX names; shape constants, scalars and the like are left out. A fully connected layer's matrix
is returned in PyTorch's ``Linear`` layout (out, in) whatever the graph's ``transB`` (or ``MatMul``) says,
and convolution kernels keep ONNX's (out, in, kH, kW), which is PyTorch's. Parsing a protobuf runs no code
from the file; weights kept in external files are refused (the reader opens no other file than the one it
is given).
"""

from __future__ import annotations

import os

import numpy as np

# op type -> the positions of its inputs that are parameters
_PARAM_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                 "BatchNormalization": (1, 2, 3, 4)}


def read_onnx(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{initializer name: array}`` of an ``.onnx`` file's layer parameters (see the module docstring)."""
    path = os.fspath(path)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ValueError(f"{path}: reading .onnx files needs the onnx package (pip install 'jaxcnn[onnx]')") from None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:   # protobuf's DecodeError and onnx's checks vary by version
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    external = [n for n, t in inits.items() if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ValueError(f"{path}: weights stored in external files ({', '.join(external[:4])}); "
                         "save the model with its weights inside (onnx.save_model(..., save_as_external_data=False))")
    transpose, keep = set(), set()
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    for node in graph.node:
        for i in _PARAM_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in inits:
                keep.add(node.input[i])
        if node.op_type == "Add" and len(node.input) == 2:   # MatMul + bias: a fully connected layer's bias
            for a, b in (node.input, node.input[::-1]):
                if a in inits and made_by.get(b) == "MatMul":
                    keep.add(a)
        if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                raise ValueError(f"{path}: Gemm node {node.name!r} transposes its input (transA=1), not a plain "
                                 "fully connected layer")
            if node.op_type == "MatMul" or not attrs.get("transB", 0):
                transpose.add(node.input[1])     # (in, out) -> PyTorch's (out, in)
    out = {}
    for name in sorted(keep):
        value = np.array(numpy_helper.to_array(inits[name]))
        out[name] = value.T.copy() if name in transpose and value.ndim == 2 else value
    if not out:
        raise ValueError(f"{path}: no layer parameters among the graph's initializers")
    return out
