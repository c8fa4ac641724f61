"""SqueezeNet and DenseNet: feature keys, minimum sizes, legacy DenseNet keys, numerics."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.weights import to_torch_state_dict


def _feats(model, size):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)[0][1]


@pytest.mark.parametrize("name,pools", [("squeezenet1_0", ("maxpool1", "maxpool4", "maxpool8")),
                                        ("squeezenet1_1", ("maxpool1", "maxpool3", "maxpool5"))])
def test_squeezenet_features(name, pools):
    f = _feats(jaxcnn.create_model(name, num_classes=7), 224)
    assert set(f) == {"conv1", *pools, *(f"fire{i}" for i in range(2, 10)), "conv10"}
    assert f["conv10"].shape[-1] == 7 and "pre_logits" not in f


def test_densenet_features():
    f = _feats(jaxcnn.create_model("densenet121"), 224)
    assert set(f) == {"stem", "pool0", "norm5", "pre_logits", *(f"denseblock{i}" for i in range(1, 5)),
                      *(f"transition{i}" for i in range(1, 4))}
    assert f["denseblock4"].shape == (1, 7, 7, 1024) and f["pre_logits"].shape == (1, 1024)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1", "densenet121"])
def test_minimum_size(name):
    model = jaxcnn.create_model(name)
    m = model.min_size()
    f = _feats(model, m)
    assert all(min(v.shape[1:3]) >= 1 for v in f.values() if v.ndim == 4)
    with pytest.raises(ValueError, match=f"at least {m}x{m}"):
        _feats(model, m - 1)


def test_densenet_reads_legacy_checkpoint_keys(tmp_path):
    model = jaxcnn.create_model("densenet121", num_classes=5)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(0)     # distinct values, no init to compile: the test is about the key map
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    state = to_torch_state_dict(variables)
    legacy = {re.sub(r"(denselayer\d+)\.(norm|relu|conv)(\d)\.", r"\1.\2.\3.", k): v for k, v in state.items()}
    assert any(".norm.1." in k for k in legacy) and legacy.keys() != state.keys()
    jaxcnn.write_state_dict(legacy, tmp_path / "legacy.npz")
    _, loaded = jaxcnn.load_pretrained("densenet121", tmp_path / "legacy.npz", num_classes=5)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_squeezenet_numerics():
    model = jaxcnn.create_model("squeezenet1_1", num_classes=10)
    variables = jaxcnn.init_variables(model, 64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    logits, _ = jax.jit(model.apply)(variables, x)     # jitted: op-by-op dispatch compiles every op apart
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    # its input gradient: tests/test_input_gradients.py
