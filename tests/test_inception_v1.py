"""GoogLeNet as published (``inception_v1``): lucid's layer names, the paper's sizes and parameter count, and
BVLC's weights read from an ONNX file and run against the ONNX specification's reference evaluator.

``tests/refs/make_inception_v1_refs.py`` evaluated a synthetic BVLC GoogLeNet ONNX graph
(``tests/parity/bvlc_googlenet_onnx.py``: the deploy.prototxt's layers with Caffe2's blob names and seeded
weights) with ``onnx.reference`` on two photos given as Caffe's input; here the same graph is written to an
``.onnx`` file, loaded with ``jaxcnn.load_pretrained`` (which maps the blob names and converts
ImageNet-normalized input to Caffe's) and run on the same photos through ``jaxcnn.preprocess``.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

import jaxcnn
from jaxcnn.layers import avg_pool
from jaxcnn.weights import to_torch_state_dict
from jaxcnn.weights.torchvision import variable_shapes
from tests.parity.bvlc_googlenet_onnx import FEATURES, LAYOUT, bvlc_googlenet
from tests.parity.synthetic import relative_error, sample

REF = os.path.join(os.path.dirname(__file__), "data", "inception_v1_refs.npz")
TOLERANCE = 1e-4

# lucid's InceptionV1 layers at 224 px: name -> (side, channels)
LUCID = {"conv2d0": (112, 64), "maxpool0": (56, 64), "localresponsenorm0": (56, 64), "conv2d1": (56, 64),
         "conv2d2": (56, 192), "localresponsenorm1": (56, 192), "maxpool1": (28, 192), "mixed3a": (28, 256),
         "mixed3b": (28, 480), "maxpool4": (14, 480), "mixed4a": (14, 512), "mixed4b": (14, 512),
         "mixed4c": (14, 512), "mixed4d": (14, 528), "mixed4e": (14, 832), "maxpool10": (7, 832),
         "mixed5a": (7, 832), "mixed5b": (7, 1024)}


def _table_count(classes: int = 1000) -> tuple[int, int]:
    """(weights, biases) of the main network from the paper's Table 1 widths, counted by hand."""
    convs = [(3, 64, 7), (64, 64, 1), (64, 192, 3)]
    cin = 192
    for item in LAYOUT:
        if isinstance(item, str):
            continue
        c1, c3r, c3, c5r, c5, cp = item[1]
        convs += [(cin, c1, 1), (cin, c3r, 1), (c3r, c3, 3), (cin, c5r, 1), (c5r, c5, 5), (cin, cp, 1)]
        cin = c1 + c3 + c5 + cp
    weights = sum(i * o * k * k for i, o, k in convs) + 1024 * classes
    return weights, sum(o for _, o, _ in convs) + classes


def test_lucid_layer_names_sizes_and_the_papers_parameter_count():
    model = jaxcnn.create_model("inception_v1")
    shapes = variable_shapes(model, 224)
    _, feats = jax.eval_shape(lambda v, x: model.apply(v, x), shapes, jax.ShapeDtypeStruct((2, 224, 224, 3),
                                                                                            jnp.float32))
    for name, (side, channels) in LUCID.items():
        assert feats[name].shape == (2, side, side, channels), name
        if name.startswith(("conv2d", "mixed")):
            assert feats[f"{name}_pre_relu"].shape == feats[name].shape
    assert feats["avgpool0"].shape == feats["pre_logits"].shape == (2, 1024)
    params = shapes["params"]
    aux = ("head0_bottleneck", "nn0", "softmax0", "head1_bottleneck", "nn1", "softmax1")
    count = lambda tree: sum(int(np.prod(s.shape)) for s in jax.tree.leaves(tree))
    main = count({k: v for k, v in params.items() if k not in aux})
    weights, biases = _table_count()
    assert main == weights + biases == 6_998_552               # BVLC's caffemodel holds exactly these
    assert abs(main - 6.8e6) / 6.8e6 < 0.03                   # the paper's "6.8M"
    heads = 2 * (128 + 4 * 4 * 128 * 1024 + 1024 + 1024 * 1000 + 1000) + 128 * (512 + 528)   # conv, fc, fc
    assert count({k: params[k] for k in aux}) == heads == 6_379_728


def test_caffe_ceil_mode_average_pool_against_a_loop():
    x = np.random.default_rng(0).normal(size=(1, 13, 11, 2)).astype(np.float32)
    got = np.asarray(avg_pool(jnp.asarray(x), 5, 3, ceil_mode=True))
    oh, ow = -(-(13 - 5) // 3) + 1, -(-(11 - 5) // 3) + 1        # Caffe: ceil((H - k) / s) + 1
    want = np.array([[x[0, 3 * i:min(3 * i + 5, 13), 3 * j:min(3 * j + 5, 11)].mean(axis=(0, 1)) for j in range(ow)]
                     for i in range(oh)])                       # a last window averages what it covers
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "googlenet.onnx"
    onnx.save(bvlc_googlenet(seed=7), path)
    return path


def test_bvlc_onnx_weights_match_the_onnx_reference(onnx_file, tmp_path):
    ref = np.load(REF)
    model, variables = jaxcnn.load_pretrained("inception_v1", onnx_file)
    assert model.transform_input and not model.aux_logits
    x = jaxcnn.preprocess(ref["photos"].astype(np.float32) / 255)
    logits, feats = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    errors = {"logits": relative_error(logits, ref["logits"])}
    for key in FEATURES.values():
        assert feats[key].shape == tuple(ref[f"shape_{key}"]), key
        errors[key] = relative_error(sample("inception_v1", key, feats[key]), ref[f"feat_{key}"])
    assert max(errors.values()) <= TOLERANCE, errors
    # what the comparison can see: the LRN layers move the logits far more than the tolerance
    assert relative_error(ref["logits_without_lrn"], ref["logits"]) > 100 * TOLERANCE
    # jaxcnn's own export of the converted weights reads back (module paths as keys)
    jaxcnn.write_state_dict(to_torch_state_dict(variables), tmp_path / "export.safetensors")
    _, again = jaxcnn.load_pretrained("inception_v1", tmp_path / "export.safetensors")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(variables)))


def test_bad_files_and_sizes_are_one_line_errors(onnx_file, tmp_path):
    model = onnx.load(onnx_file)
    drop = [t for t in model.graph.initializer if t.name == "inception_5b/pool_proj_b_0"][0]
    model.graph.initializer.remove(drop)
    onnx.save(model, tmp_path / "short.onnx")
    with pytest.raises(ValueError, match=r"does not fit inception_v1 model: missing keys: mixed5b\.pool_reduce\.bias"):
        jaxcnn.load_pretrained("inception_v1", tmp_path / "short.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk" * 10)
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX model"):
        jaxcnn.load_pretrained("inception_v1", tmp_path / "junk.onnx")
    net = jaxcnn.create_model("inception_v1", num_classes=10)
    with pytest.raises(ValueError, match=r"auxiliary heads need mixed4a maps of at least 3x3 .* aux_logits=False"):
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 40, 40, 3), jnp.float32))
    with pytest.raises(ValueError, match="at least 31x31 pixels"):
        jax.eval_shape(lambda x: net.apply({}, x), jax.ShapeDtypeStruct((1, 30, 30, 3), jnp.float32))
