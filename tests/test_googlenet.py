"""GoogLeNet numerics: features, aux heads, transform_input, init (parity with torchvision is in test_parity.py).

The numerical checks run on the parity tests' synthetic He-scaled weights: with
torchvision's init (std 0.01) the eval-mode signal fades to ~1e-11 before the
logits, which would make them trivially equal across inputs and dtypes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.models.googlenet import _LAYOUT, BasicConv2d, Inception, InceptionAux
from jaxcnn.weights.torchvision import convert_state_dict, to_torch_state_dict, variable_shapes
from tests.parity.synthetic import synthetic_state_dict

SIZE = 64
CLASSES = 10

# (feature, stride, channels) for every spatial feature
SPATIAL = [("conv1", 2, 64), ("maxpool1", 4, 64), ("conv2", 4, 64), ("conv3", 4, 192), ("maxpool2", 8, 192),
           ("inception3a", 8, 256), ("inception3b", 8, 480), ("maxpool3", 16, 480), ("inception4a", 16, 512),
           ("inception4b", 16, 512), ("inception4c", 16, 512), ("inception4d", 16, 528), ("inception4e", 16, 832),
           ("maxpool4", 32, 832), ("inception5a", 32, 832), ("inception5b", 32, 1024)]


@pytest.fixture(scope="module")
def googlenet():
    model = jaxcnn.create_model("googlenet", num_classes=CLASSES)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variable_shapes(model, SIZE))
    shapes = {k: v.shape for k, v in to_torch_state_dict(zeros).items()}
    variables = convert_state_dict(synthetic_state_dict(shapes, "googlenet"), model, family="googlenet",
                                   resolution=SIZE)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)), jnp.float32)
    forward = jax.jit(functools.partial(model.apply, train=False))
    return model, variables, x, forward


def test_features_and_strides(googlenet):
    _, variables, x, forward = googlenet
    logits, feats = forward(variables, x)
    assert logits.shape == (2, CLASSES) and logits.dtype == jnp.float32
    assert set(feats) == {k for k, _, _ in SPATIAL} | {"pre_logits"}  # no aux heads in eval
    for key, stride, ch in SPATIAL:
        assert feats[key].shape == (2, SIZE // stride, SIZE // stride, ch), key
    assert feats["pre_logits"].shape == (2, 1024)
    np.testing.assert_allclose(feats["pre_logits"], feats["inception5b"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))


def test_bfloat16_close_to_float32(googlenet):
    _, variables, x, forward = googlenet
    logits32, _ = forward(variables, x)
    bf16 = jaxcnn.create_model("googlenet", num_classes=CLASSES, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["inception5b"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(logits32)))
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 5e-2 * scale


def test_training_returns_aux_logits_uses_dropout_and_updates_batch_stats(googlenet):
    model, variables, x, _ = googlenet

    @jax.jit
    def train_step(key):
        return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    (logits, feats), updates = train_step(jax.random.key(0))
    (logits_b, feats_b), _ = train_step(jax.random.key(1))
    assert set(feats) == {k for k, _, _ in SPATIAL} | {"pre_logits", "aux1", "aux2"}
    for key in ("aux1", "aux2"):
        assert feats[key].shape == (2, CLASSES) and feats[key].dtype == jnp.float32, key
        assert bool(jnp.all(jnp.isfinite(feats[key])))
        assert not np.allclose(feats[key], feats_b[key]), key  # aux dropout (0.7) is active
    assert not np.allclose(logits, logits_b)  # main dropout is active
    for path in (("conv1", "bn"), ("aux1", "conv", "bn")):  # the aux heads' BN statistics are trained too
        before, after = variables["batch_stats"], updates["batch_stats"]
        for p in path:
            before, after = before[p], after[p]
        assert not np.allclose(before["mean"], after["mean"]), path


def test_without_aux_logits_there_are_no_aux_heads():
    model = jaxcnn.create_model("googlenet", num_classes=CLASSES, aux_logits=False)
    variables = variable_shapes(model, SIZE)
    assert not {"aux1", "aux2"} & set(variables["params"])
    (_, feats), _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"]),
        variables, jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32))
    assert "aux1" not in feats and "aux2" not in feats


def test_parameter_counts_match_torchvision():
    # torchvision 0.29.1: sum(p.numel() for p in googlenet(aux_logits=...).parameters()) for 1000 classes;
    # 6,624,904 is also GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]
    for aux_logits, expected in ((True, 13_004_888), (False, 6_624_904)):
        model = jaxcnn.create_model("googlenet", aux_logits=aux_logits)
        assert jaxcnn.count_params(variable_shapes(model, 224)) == expected, aux_logits


def test_transform_input_renormalizes_to_minus_one_one(googlenet):
    # transform_input=True on ImageNet-normalized pixels == the plain model on (pixels - 0.5) / 0.5
    _, variables, _, forward = googlenet
    pixels = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)), jnp.float32)
    model_t = jaxcnn.create_model("googlenet", num_classes=CLASSES, transform_input=True)
    feats_t = jax.jit(functools.partial(model_t.apply, train=False))(variables, jaxcnn.preprocess(pixels))[1]
    feats = forward(variables, (pixels - 0.5) / 0.5)[1]
    plain = forward(variables, jaxcnn.preprocess(pixels))[1]
    for key in ("conv1", "inception3b", "pre_logits"):
        scale = float(jnp.abs(feats[key]).max())
        assert float(jnp.abs(feats_t[key] - feats[key]).max()) < 1e-5 * scale, key
        assert float(jnp.abs(plain[key] - feats[key]).max()) > 1e-2 * scale, key  # the option does something
    assert jaxcnn.model_info("googlenet").pretrained_options == (("transform_input", True),)


def test_min_size(googlenet):
    _, variables, _, forward = googlenet
    logits, feats = jax.eval_shape(forward, variables, jax.ShapeDtypeStruct((1, 15, 15, 3), jnp.float32))
    assert feats["inception5b"].shape == (1, 1, 1, 1024) and logits.shape == (1, CLASSES)
    for shape in ((1, 14, 15, 3), (1, 15, 14, 3)):
        with pytest.raises(ValueError, match="at least 15x15"):
            jax.eval_shape(forward, variables, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_init_matches_torchvision():
    # trunc_normal_(std=0.01, a=-2, b=2) for conv and linear weights, BN weight 1 / bias 0,
    # torch's default linear bias U(+-1/sqrt(fan_in)). The modules GoogLeNet builds, initialised alone
    # (the whole model's init compiles for 12-28 s on 2 cores).
    conv = functools.partial(BasicConv2d, stddev=0.01)
    inception = jaxcnn.init_variables(Inception(*_LAYOUT[-1][1], conv_block=conv), 7, channels=832)["params"]
    aux = jaxcnn.init_variables(InceptionAux(CLASSES, 0.7, conv_block=conv), 14, channels=528)["params"]
    for kernel in (inception["branch2.1"]["conv"]["kernel"], aux["fc1"]["kernel"]):
        assert abs(float(kernel.std()) - 0.01) < 3e-4 and abs(float(kernel.mean())) < 1e-4
    bn = inception["branch3.0"]["bn"]
    assert bool(jnp.all(bn["scale"] == 1)) and bool(jnp.all(bn["bias"] == 0))
    bias = aux["fc1"]["bias"]  # fan_in 2048
    assert float(jnp.abs(bias).max()) <= 1 / np.sqrt(2048) and abs(float(bias.std()) - 1 / np.sqrt(3 * 2048)) < 2e-3
