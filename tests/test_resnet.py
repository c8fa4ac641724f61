"""ResNet family numerics (parity with torchvision is in test_parity.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn

SIZE = 64


@pytest.fixture(scope="module")
def resnet18():
    model = jaxcnn.create_model("resnet18", num_classes=10)
    variables = jaxcnn.init_variables(model, SIZE)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)), jnp.float32)
    forward = jax.jit(functools.partial(model.apply, train=False))
    return model, variables, x, forward


def test_init_depends_on_the_seed_alone_and_draws_the_specified_distributions(resnet18):
    model, variables, _, _ = resnet18
    # the caller's settings do not leak in (the suite's default is rbg, see conftest.py)
    with jax.default_prng_impl("threefry2x32"), jax.threefry_partitionable(True):
        again = jaxcnn.init_variables(model, SIZE)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, variables, again)))
    other = jaxcnn.init_variables(model, SIZE, seed=1)["params"]["layer4.1"]["conv2"]["kernel"]
    kernel = np.asarray(variables["params"]["layer4.1"]["conv2"]["kernel"])   # 3x3x512x512
    assert not np.allclose(kernel, other)
    # kaiming_normal_(mode="fan_out"): N(0, 2 / (3 * 3 * 512)); 4.55% of a normal lies beyond 2 stds
    std = np.sqrt(2 / (9 * 512))
    assert abs(kernel.std() / std - 1) < 0.01 and abs(kernel.mean()) < 0.01 * std
    assert abs(np.mean(np.abs(kernel) > 2 * std) - 0.0455) < 0.002
    # the fc layer: torch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    fc = np.asarray(variables["params"]["fc"]["kernel"])
    bound = 1 / np.sqrt(fc.shape[0])
    assert np.abs(fc).max() <= bound and abs(fc.std() * np.sqrt(3) / bound - 1) < 0.05


def test_features_and_strides(resnet18):
    _, variables, x, forward = resnet18
    logits, feats = forward(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    expected = {"stem", "stem_pool", "pre_logits"} | {f"layer{s}" for s in range(1, 5)} | {
        f"layer{s}.{b}" for s in range(1, 5) for b in range(2)}
    assert set(feats) == expected
    for key, stride, ch in [("stem", 2, 64), ("stem_pool", 4, 64), ("layer1", 4, 64), ("layer2", 8, 128),
                            ("layer3", 16, 256), ("layer4", 32, 512)]:
        assert feats[key].shape == (2, SIZE // stride, SIZE // stride, ch), key
    assert feats["pre_logits"].shape == (2, 512)
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))


def test_bfloat16_close_to_float32(resnet18):
    model, variables, x, forward = resnet18
    logits32, _ = forward(variables, x)
    bf16 = jaxcnn.create_model("resnet18", num_classes=10, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["layer4"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(logits32)))
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 5e-2 * scale


def test_train_mode_updates_batch_stats(resnet18):
    model, variables, x, _ = resnet18
    (logits, _), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["bn1"]["mean"]
    after = updates["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(before, after)
    assert logits.shape == (2, 10)


def test_dilated_backbone_keeps_stride_8():
    model = jaxcnn.create_model("resnet50", include_top=False, replace_stride_with_dilation=(False, True, True))
    shapes = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    (logits, feats), variables = shapes
    assert logits is None and "fc" not in variables["params"]
    assert feats["layer4"].shape == (1, 8, 8, 2048) and feats["layer3"].shape == (1, 8, 8, 1024)


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = jaxcnn.create_model("resnet18", zero_init_residual=True)
    variables = jaxcnn.init_variables(model, 32)
    assert float(jnp.abs(variables["params"]["layer1.0"]["bn2"]["scale"]).max()) == 0.0
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 32, 32, 3)), jnp.float32)
    _, feats = model.apply(variables, x)
    np.testing.assert_allclose(feats["layer1.0"], feats["stem_pool"], atol=1e-6)  # relu(0 + relu(x)) == x
