"""Inception-v3 numerics: features, aux head, transform_input, init (parity with torchvision is in test_parity.py).

The numerical checks run on the parity tests' synthetic He-scaled weights (a
freshly initialised network's eval-mode signal fades before the logits).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.weights.torchvision import convert_state_dict, to_torch_state_dict, variable_shapes
from tests.parity.synthetic import synthetic_state_dict

SIZE = 75  # torchvision's min_size
CLASSES = 10

# (feature, spatial size at 75 px, at 299 px (torchvision's comments), channels)
SPATIAL = [("Conv2d_1a_3x3", 37, 149, 32), ("Conv2d_2a_3x3", 35, 147, 32), ("Conv2d_2b_3x3", 35, 147, 64),
           ("maxpool1", 17, 73, 64), ("Conv2d_3b_1x1", 17, 73, 80), ("Conv2d_4a_3x3", 15, 71, 192),
           ("maxpool2", 7, 35, 192), ("Mixed_5b", 7, 35, 256), ("Mixed_5c", 7, 35, 288), ("Mixed_5d", 7, 35, 288),
           ("Mixed_6a", 3, 17, 768), ("Mixed_6b", 3, 17, 768), ("Mixed_6c", 3, 17, 768), ("Mixed_6d", 3, 17, 768),
           ("Mixed_6e", 3, 17, 768), ("Mixed_7a", 1, 8, 1280), ("Mixed_7b", 1, 8, 2048), ("Mixed_7c", 1, 8, 2048)]
KEYS = {k for k, *_ in SPATIAL} | {"pre_logits"}


def _train_apply(model):
    return jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]))


@pytest.fixture(scope="module")
def inception():
    model = jaxcnn.create_model("inception_v3", num_classes=CLASSES)
    # shapes traced below 299 px: AuxLogits' parameters come from its placeholder input
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variable_shapes(model, SIZE))
    shapes = {k: v.shape for k, v in to_torch_state_dict(zeros).items()}
    variables = convert_state_dict(synthetic_state_dict(shapes, "inception_v3"), model, family="inception_v3",
                                   resolution=SIZE)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)), jnp.float32)
    forward = jax.jit(functools.partial(model.apply, train=False))
    return model, variables, x, forward


def test_features_and_sizes(inception):
    model, variables, x, forward = inception
    logits, feats = forward(variables, x)
    assert logits.shape == (2, CLASSES) and logits.dtype == jnp.float32
    assert set(feats) == KEYS  # no aux head in eval
    for key, size, _, ch in SPATIAL:
        assert feats[key].shape == (2, size, size, ch), key
    assert feats["pre_logits"].shape == (2, 2048)
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))
    # at the native resolution (shapes only)
    _, feats299 = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                                 jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    assert set(feats299) == KEYS
    for key, _, size, ch in SPATIAL:
        assert feats299[key].shape == (1, size, size, ch), key


def test_bfloat16_close_to_float32(inception):
    _, variables, x, forward = inception
    logits32, _ = forward(variables, x)
    bf16 = jaxcnn.create_model("inception_v3", num_classes=CLASSES, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["Mixed_7c"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(logits32)))
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 5e-2 * scale


def test_training_without_aux_uses_dropout_and_updates_batch_stats(inception):
    _, variables, x, _ = inception
    model = jaxcnn.create_model("inception_v3", num_classes=CLASSES, aux_logits=False)
    variables = {c: {k: v for k, v in tree.items() if k != "AuxLogits"} for c, tree in variables.items()}
    train = _train_apply(model)
    (logits, feats), updates = train(variables, x, jax.random.key(0))
    (logits_b, _), _ = train(variables, x, jax.random.key(1))
    assert set(feats) == KEYS and bool(jnp.all(jnp.isfinite(logits)))
    assert not np.allclose(logits, logits_b)  # dropout is active
    before, after = variables["batch_stats"]["Mixed_5b"], updates["batch_stats"]["Mixed_5b"]
    assert not np.allclose(before["branch1x1"]["bn"]["mean"], after["branch1x1"]["bn"]["mean"])


def test_training_returns_aux_logits_from_299_pixels(inception):
    model, variables, _, _ = inception
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 299, 299, 3)), jnp.float32)
    (logits, feats), updates = _train_apply(model)(variables, x, jax.random.key(0))
    assert set(feats) == KEYS | {"aux"}
    assert feats["aux"].shape == (2, CLASSES) and feats["aux"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(feats["aux"]))) and not np.allclose(feats["aux"], logits)
    assert not np.allclose(variables["batch_stats"]["AuxLogits"]["conv0"]["bn"]["mean"],
                           updates["batch_stats"]["AuxLogits"]["conv0"]["bn"]["mean"])
    # below 299 px Mixed_6e is too small for AuxLogits' 5x5 convolution (torchvision fails there too)
    with pytest.raises(ValueError, match="at least 299x299 pixels in training.*aux_logits=False"):
        jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": jax.random.key(0)}),
                       variables, jax.ShapeDtypeStruct((1, 299, 298, 3), jnp.float32))


def test_parameter_counts_match_torchvision():
    # torchvision 0.29.1: sum(p.numel() for p in inception_v3(aux_logits=...).parameters()) for 1000 classes;
    # 27,161,264 is also Inception_V3_Weights.IMAGENET1K_V1.meta["num_params"]
    for aux_logits, expected in ((True, 27_161_264), (False, 23_834_568)):
        model = jaxcnn.create_model("inception_v3", aux_logits=aux_logits)
        small, native = variable_shapes(model, SIZE), variable_shapes(model, 299)
        assert jaxcnn.count_params(small) == expected, aux_logits
        assert jax.tree_util.tree_map(lambda s: s.shape, small) == jax.tree_util.tree_map(lambda s: s.shape, native)


def test_transform_input_renormalizes_to_minus_one_one(inception):
    # transform_input=True on ImageNet-normalized pixels == the plain model on (pixels - 0.5) / 0.5
    _, variables, _, forward = inception
    pixels = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)), jnp.float32)
    model_t = jaxcnn.create_model("inception_v3", num_classes=CLASSES, transform_input=True)
    feats_t = jax.jit(functools.partial(model_t.apply, train=False))(variables, jaxcnn.preprocess(pixels))[1]
    feats = forward(variables, (pixels - 0.5) / 0.5)[1]
    plain = forward(variables, jaxcnn.preprocess(pixels))[1]
    for key in ("Conv2d_1a_3x3", "Mixed_5b", "pre_logits"):
        scale = float(jnp.abs(feats[key]).max())
        assert float(jnp.abs(feats_t[key] - feats[key]).max()) < 1e-5 * scale, key
        assert float(jnp.abs(plain[key] - feats[key]).max()) > 1e-2 * scale, key  # the option does something
    assert jaxcnn.model_info("inception_v3").pretrained_options == (("transform_input", True),)


def test_min_size(inception):
    _, variables, _, forward = inception  # the fixture's input is 75x75
    for shape in ((1, 74, 75, 3), (1, 75, 74, 3)):
        with pytest.raises(ValueError, match="at least 75x75"):
            forward(variables, jnp.ones(shape, jnp.float32))


@pytest.mark.slow   # the whole model's init compiles in 12-20 s on 2 cores; GoogLeNet's runs by default
def test_init_matches_torchvision():
    # trunc_normal_(a=-2, b=2) with std 0.1, 0.01 for AuxLogits.conv1 and 0.001 for AuxLogits.fc;
    # BN weight 1 / bias 0; torch's default linear bias U(+-1/sqrt(fan_in))
    # (initialised below 299 px: AuxLogits' parameters come from its placeholder input)
    params = jaxcnn.init_variables(jaxcnn.create_model("inception_v3", num_classes=CLASSES), SIZE)["params"]
    for kernel, std in ((params["Mixed_7c"]["branch3x3dbl_2"]["conv"]["kernel"], 0.1),
                        (params["fc"]["kernel"], 0.1),
                        (params["AuxLogits"]["conv1"]["conv"]["kernel"], 0.01),
                        (params["AuxLogits"]["fc"]["kernel"], 0.001)):
        assert abs(float(kernel.std()) / std - 1) < 0.05 and abs(float(kernel.mean())) < 0.05 * std, std
    bn = params["Mixed_6b"]["branch7x7_2"]["bn"]
    assert bool(jnp.all(bn["scale"] == 1)) and bool(jnp.all(bn["bias"] == 0))
    for bias, fan_in in ((params["fc"]["bias"], 2048), (params["AuxLogits"]["fc"]["bias"], 768)):
        assert 0 < float(jnp.abs(bias).max()) <= 1 / np.sqrt(fan_in), fan_in
