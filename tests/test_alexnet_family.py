"""AlexNet family: the two-tower net against an independent float64 NumPy forward pass; ZFNet's plan."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.weights.torchvision import variable_shapes


def _conv(x, w, b, stride, pad, groups):
    """x (H, W, C), w (kh, kw, C/groups, O) -> (H', W', O), by summing shifted patch matmuls."""
    kh, kw, ci, co = w.shape
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    oh, ow = (xp.shape[0] - kh) // stride + 1, (xp.shape[1] - kw) // stride + 1
    out = np.zeros((oh, ow, co)) + b
    cog = co // groups
    for i in range(kh):
        for j in range(kw):
            patch = xp[i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            for g in range(groups):
                out[..., g * cog:(g + 1) * cog] += patch[..., g * ci:(g + 1) * ci] @ w[i, j, :, g * cog:(g + 1) * cog]
    return out


def _lrn(x, towers):
    # b_c = a_c / (2 + 1e-4 * sum of a_j^2 over j in [c-2, c+2] within c's tower) ** 0.75
    out = np.empty_like(x)
    per = x.shape[-1] // towers
    for c in range(x.shape[-1]):
        t0 = (c // per) * per
        lo, hi = max(t0, c - 2), min(t0 + per - 1, c + 2)
        out[..., c] = x[..., c] / (2.0 + 1e-4 * np.sum(x[..., lo:hi + 1] ** 2, axis=-1)) ** 0.75
    return out


def _maxpool(x, k=3, s=2):
    oh, ow = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return np.array([[x[i * s:i * s + k, j * s:j * s + k].max(axis=(0, 1)) for j in range(ow)] for i in range(oh)])


def _adaptive(x, out=6):
    h, w = x.shape[:2]
    return np.array([[x[math.floor(i * h / out):math.ceil((i + 1) * h / out),
                        math.floor(j * w / out):math.ceil((j + 1) * w / out)].mean(axis=(0, 1))
                      for j in range(out)] for i in range(out)])


def _twotower_numpy(p, img):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    P = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in p.items()}
    x = relu(_conv(img, P["conv1"]["kernel"], P["conv1"]["bias"], 4, 2, 1))
    x = _maxpool(_lrn(x, 2))
    x = relu(_conv(x, P["conv2"]["kernel"], P["conv2"]["bias"], 1, 2, 2))
    x = _maxpool(_lrn(x, 2))
    x = relu(_conv(x, P["conv3"]["kernel"], P["conv3"]["bias"], 1, 1, 1))
    x = relu(_conv(x, P["conv4"]["kernel"], P["conv4"]["bias"], 1, 1, 2))
    x = relu(_conv(x, P["conv5"]["kernel"], P["conv5"]["bias"], 1, 1, 2))
    x = _adaptive(_maxpool(x)).transpose(2, 0, 1).reshape(-1)  # torch's (C, H, W) flatten
    x = relu(x @ P["fc6"]["kernel"] + P["fc6"]["bias"])
    x = relu(x @ P["fc7"]["kernel"] + P["fc7"]["bias"])
    return x @ P["fc8"]["kernel"] + P["fc8"]["bias"]


def test_twotower_equals_float64_numpy_of_the_paper():
    model = jaxcnn.create_model("alexnet_twotower")
    variables = jaxcnn.init_variables(model, 99, seed=0)
    # the paper's N(0, 0.01) init lets the biases dominate; He-scale the kernels so every layer matters
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * (np.sqrt(2.0 / np.prod(a.shape[:-1])) / 0.01 if path[-1].key == "kernel" else 0.1),
        variables["params"])
    img = np.random.default_rng(0).standard_normal((99, 99, 3))
    logits, feats = model.apply({"params": params}, jnp.asarray(img[None], jnp.float32))
    want = _twotower_numpy(jax.device_get(params), img)
    assert feats["pool5"].shape == (1, 2, 2, 256)
    err = np.max(np.abs(np.asarray(logits[0], np.float64) - want)) / np.max(np.abs(want))
    assert err < 1e-5, err
    assert np.std(want) > 0.1 * np.max(np.abs(want))  # the logits differ between classes


def test_lrn_does_not_cross_towers():
    x = np.random.default_rng(1).standard_normal((1, 2, 2, 8)).astype(np.float32)
    got = np.asarray(jaxcnn.layers.local_response_norm(jnp.asarray(x), groups=2))
    np.testing.assert_allclose(got[0], _lrn(x[0].astype(np.float64), 2), rtol=1e-5)
    one_tower = np.asarray(jaxcnn.layers.local_response_norm(jnp.asarray(x), groups=1))
    assert not np.allclose(one_tower[..., 3:5], got[..., 3:5])  # channels 3 and 4 sit at the tower border


def _conv_params(k, cin, cout):
    return k * k * cin * cout + cout


def test_parameter_counts_by_formula():
    twotower = (_conv_params(11, 3, 96) + _conv_params(5, 48, 256) + _conv_params(3, 256, 384)
                + _conv_params(3, 192, 384) + _conv_params(3, 192, 256)
                + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)
    zf = (_conv_params(7, 3, 96) + _conv_params(5, 96, 256) + _conv_params(3, 256, 384)
          + _conv_params(3, 384, 384) + _conv_params(3, 384, 256) + 9216 * 4096 + 4096 + 4096 * 4096 + 4096
          + 4096 * 1000 + 1000)
    assert twotower == 60_965_224
    for name, want in (("alexnet_twotower", twotower), ("zfnet", zf)):
        assert jaxcnn.count_params(variable_shapes(jaxcnn.create_model(name), 224)) == want


def _feats(name, size):
    m = jaxcnn.create_model(name)
    return jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))[0][1]


def test_zfnet_maps_follow_the_paper():
    f = _feats("zfnet", 224)
    sizes = [f[k].shape[1] for k in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")]
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]
    assert f["conv1"].shape[-1] == 96 and f["conv5"].shape[-1] == 256
    t = _feats("alexnet_twotower", 224)
    assert [t[k].shape[1] for k in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")] == [55, 27, 27, 13, 13, 6]
    assert set(t) == set(f) == {"conv1", "conv2", "conv3", "conv4", "conv5", "norm1", "norm2", "pool1", "pool2",
                                "pool5", "fc6", "fc7", "pre_logits"}


@pytest.mark.parametrize("name", ["alexnet", "alexnet_twotower", "zfnet"])
def test_minimum_size(name):
    _feats(name, 63)
    with pytest.raises(ValueError, match="at least 63x63"):
        _feats(name, 62)


def test_alexnet_numerics():
    model = jaxcnn.create_model("alexnet", num_classes=10)
    variables = jaxcnn.init_variables(model, 64)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 64, 64, 3)), jnp.float32)
    f32, feats = jax.jit(functools.partial(model.apply, train=False))(variables, x)
    assert set(feats) == {"conv1", "conv2", "conv3", "conv4", "conv5", "pool1", "pool2", "pool5", "fc6", "fc7",
                          "pre_logits"}
    bf16 = jaxcnn.create_model("alexnet", num_classes=10, dtype="bfloat16")
    l16, _ = bf16.apply(variables, x)
    assert float(jnp.max(jnp.abs(l16 - f32))) < 5e-2 * float(jnp.max(jnp.abs(f32)))
    g = jax.grad(lambda x: model.apply(variables, x)[0][:, 0].sum())(x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    t1, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)})
    t2, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(t1, t2)  # dropout is active in training
