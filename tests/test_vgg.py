"""VGG family numerics (parity with torchvision for all eight variants is in test_parity.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn

# convolutions per block (the paper's table 1, columns A, B, D, E) and torchvision's parameter counts
DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
TORCHVISION_PARAMS = {
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
}
NAMES = list(TORCHVISION_PARAMS)


def _init_shapes(name, hw, **options):
    model = jaxcnn.create_model(name, **options)
    x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
    (logits, feats), variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    return logits, feats, variables


@pytest.mark.parametrize("name", NAMES)
def test_structure_features_and_parameter_count(name):
    depths = DEPTHS[name.removesuffix("_bn")]
    logits, feats, variables = _init_shapes(name, (64, 96), num_classes=7)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    convs = {f"conv{b + 1}_{i + 1}": (64 // 2 ** b, 96 // 2 ** b, WIDTHS[b]) for b, n in enumerate(depths)
             for i in range(n)}
    pools = {f"pool{b + 1}": (32 // 2 ** b, 48 // 2 ** b, WIDTHS[b]) for b in range(5)}
    assert set(feats) == set(convs) | set(pools) | {"fc6", "fc7", "pre_logits"}
    for key, hwc in {**convs, **pools}.items():
        assert feats[key].shape == (2, *hwc), key
    for key in ("fc6", "fc7", "pre_logits"):
        assert feats[key].shape == (2, 4096), key
    # one conv (+ BN) per depth entry, three Linear layers; BN layers only in the _bn variants
    n_convs = sum(depths)
    has_bn = name.endswith("_bn")
    assert len(variables["params"]) == n_convs * (2 if has_bn else 1) + 3
    assert ("batch_stats" in variables) == has_bn
    full = jax.eval_shape(lambda: jaxcnn.init_variables(jaxcnn.create_model(name), 32))
    assert jaxcnn.count_params(full) == TORCHVISION_PARAMS[name]


def test_style_transfer_layers_of_vgg19():
    _, feats, _ = _init_shapes("vgg19", (32, 32))
    for key, (hw, c) in {"conv1_1": (32, 64), "conv2_1": (16, 128), "conv3_1": (8, 256), "conv4_1": (4, 512),
                         "conv4_2": (4, 512), "conv5_1": (2, 512), "conv5_4": (2, 512)}.items():
        assert feats[key].shape == (2, hw, hw, c), key
    assert "conv5_5" not in feats and "conv3_5" not in feats


def test_minimum_input_size():
    _init_shapes("vgg11", (32, 32))
    for hw in [(31, 40), (40, 31)]:
        with pytest.raises(ValueError, match="at least 32x32"):
            _init_shapes("vgg11", hw)


@pytest.fixture(scope="module")
def vgg11_bn():
    model = jaxcnn.create_model("vgg11_bn", num_classes=10)
    variables = jaxcnn.init_variables(model, 32)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 37, 45, 3)), jnp.float32)

    # (logits, features); the input gradient is tested in tests/test_input_gradients.py
    return model, variables, x, jax.jit(model.apply)(variables, x)


def test_init_matches_torchvision(vgg11_bn):
    _, variables, _, _ = vgg11_bn
    p = variables["params"]
    # Kaiming normal, fan out, on the convolutions: std sqrt(2 / (3 * 3 * out_channels))
    for name, out in [("features.0", 64), ("features.8", 256), ("features.25", 512)]:
        std = float(jnp.std(p[name]["kernel"]))
        assert abs(std / np.sqrt(2.0 / (9 * out)) - 1) < 0.1, (name, std)
        assert float(jnp.abs(p[name]["bias"]).max()) == 0.0
    for name in ("classifier.0", "classifier.3", "classifier.6"):
        assert abs(float(jnp.std(p[name]["kernel"])) / 0.01 - 1) < 0.05, name
        assert float(jnp.abs(p[name]["bias"]).max()) == 0.0
    assert float(jnp.abs(p["features.1"]["scale"] - 1).max()) == 0.0
    assert float(jnp.abs(p["features.1"]["bias"]).max()) == 0.0


def test_forward_is_finite_and_features_are_post_relu(vgg11_bn):
    _, _, _, (logits, feats) = vgg11_bn
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))
    for key in ("conv1_1", "conv3_2", "conv5_2", "fc6", "fc7"):
        assert float(feats[key].min()) >= 0.0 and float(feats[key].max()) > 0.0, key  # Caffe's convention
    # 37x45 -> pools of sizes floor(./2): the adaptive pool then brings 1x1 to 7x7
    assert feats["pool5"].shape == (2, 1, 1, 512)


def test_bfloat16_close_to_float32(vgg11_bn):
    _, variables, x, (logits32, _) = vgg11_bn
    bf16 = jaxcnn.create_model("vgg11_bn", num_classes=10, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["conv4_2"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    scale = float(jnp.abs(logits32).max())
    assert scale > 0 and float(jnp.abs(logits16 - logits32).max()) < 5e-2 * scale


def test_train_mode_dropout_and_batch_stats(vgg11_bn):
    model, variables, x, (logits_eval, _) = vgg11_bn

    @jax.jit
    def train_forward(variables, key):
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})

    (logits_a, feats_a), updates = train_forward(variables, jax.random.key(1))
    (logits_b, _), _ = train_forward(variables, jax.random.key(2))
    assert bool(jnp.all(jnp.isfinite(logits_a)))
    assert not np.allclose(logits_a, logits_b)  # dropout depends on the rng
    alive = feats_a["fc7"] > 0
    kept = (feats_a["pre_logits"] != 0) & alive
    assert abs(float(kept.sum() / alive.sum()) - 0.5) < 0.05  # dropout_rate 0.5 on fc7
    np.testing.assert_allclose(feats_a["pre_logits"][kept], 2 * feats_a["fc7"][kept], rtol=1e-6)  # 1 / (1 - p)
    before = variables["batch_stats"]["features.1"]["mean"]
    after = updates["batch_stats"]["features.1"]["mean"]
    assert not np.allclose(before, after)
    assert not np.allclose(logits_a, logits_eval)


def test_dropout_rate_option():
    model = jaxcnn.create_model("vgg11", dropout_rate=0.0)
    assert model.dropout_rate == 0.0
    with pytest.raises(ValueError, match="dropout_rate"):
        jaxcnn.create_model("vgg11", dropout_rate=1.5)
