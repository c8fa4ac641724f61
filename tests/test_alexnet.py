"""AlexNet family: torchvision's net (parity is in test_parity.py), the two-tower net, ZFNet.

The key check is an independent float64 NumPy forward pass of the two-tower
net (grouped convolution on extracted patches, LRN channel by channel within
each tower, max and adaptive pooling by loops) on the module's own weights.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import layers
from jaxcnn.weights.torchvision import variable_shapes

MIN = 63
FEATS_TV = {"conv1", "conv2", "conv3", "conv4", "conv5", "pool1", "pool2", "pool5", "fc6", "fc7", "pre_logits"}
FEATS_PAPER = FEATS_TV | {"norm1", "norm2"}


def _count(shapes):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))


def _formula(convs, fcs, num_classes=1000):
    """Parameters of (out, in, k, groups) convolutions and (in, out) linear layers, with biases."""
    n = sum(o * (i // g) * k * k + o for o, i, k, g in convs)
    return n + sum(i * o + o for i, o in fcs + [(4096, num_classes)])


@pytest.mark.parametrize("name,convs,expected", [
    ("alexnet", [(64, 3, 11, 1), (192, 64, 5, 1), (384, 192, 3, 1), (256, 384, 3, 1), (256, 256, 3, 1)],
     61_100_840),
    ("alexnet_twotower", [(96, 3, 11, 1), (256, 96, 5, 2), (384, 256, 3, 1), (384, 384, 3, 2), (256, 384, 3, 2)],
     60_965_224),
    ("zfnet", [(96, 3, 7, 1), (256, 96, 5, 1), (384, 256, 3, 1), (384, 384, 3, 1), (256, 384, 3, 1)], None),
])
def test_parameter_counts(name, convs, expected):
    n = _count(variable_shapes(jaxcnn.create_model(name), 224))
    want = _formula(convs, [(256 * 36, 4096), (4096, 4096)])
    assert n == want
    if expected is not None:
        assert n == expected


def test_twotower_init_is_the_papers():
    params = variable_shapes(jaxcnn.create_model("alexnet_twotower"), MIN)["params"]
    assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)  # a tower sees only its own 48 channels
    assert params["conv3"]["kernel"].shape == (3, 3, 256, 384)  # conv3 sees both towers
    variables = jaxcnn.init_variables(jaxcnn.create_model("alexnet_twotower"), MIN)["params"]
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        bias = np.asarray(variables[layer]["bias"])
        want = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert np.all(bias == want), layer
        kernel = np.asarray(variables[layer]["kernel"])
        assert abs(kernel.std() - 0.01) < 1e-3 and abs(kernel.mean()) < 1e-3, layer


# ----------------------------------------------------------------------------
# torchvision's AlexNet


@pytest.fixture(scope="module")
def alexnet():
    model = jaxcnn.create_model("alexnet", num_classes=10)
    variables = jaxcnn.init_variables(model, 64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    forward = jax.jit(functools.partial(model.apply, train=False))
    return model, variables, x, forward


def test_alexnet_outputs(alexnet):
    _, variables, x, forward = alexnet
    logits, feats = forward(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert set(feats) == FEATS_TV
    # 64 px: conv1 15, pool1 7, pool2 3, pool5 1
    for key, shape in [("conv1", (2, 15, 15, 64)), ("pool1", (2, 7, 7, 64)), ("conv2", (2, 7, 7, 192)),
                       ("pool2", (2, 3, 3, 192)), ("conv5", (2, 3, 3, 256)), ("pool5", (2, 1, 1, 256)),
                       ("fc6", (2, 4096)), ("fc7", (2, 4096)), ("pre_logits", (2, 4096))]:
        assert feats[key].shape == shape, key
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))
    assert float(jnp.min(feats["fc7"])) >= 0 and float(jnp.min(feats["conv1"])) >= 0  # post-ReLU
    w = variables["params"]["classifier.6"]
    np.testing.assert_allclose(feats["pre_logits"] @ w["kernel"] + w["bias"], logits, rtol=1e-4, atol=1e-5)


def test_alexnet_bfloat16_close_to_float32(alexnet):
    _, variables, x, forward = alexnet
    logits32, _ = forward(variables, x)
    bf16 = jaxcnn.create_model("alexnet", num_classes=10, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["conv5"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(logits32)))
    assert scale > 0
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 5e-2 * scale


def test_alexnet_input_gradient_is_finite_and_nonzero(alexnet):
    model, variables, x, _ = alexnet
    g = jax.jit(jax.grad(lambda x: model.apply(variables, x)[0][:, 3].sum()))(x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_alexnet_dropout_in_train_mode(alexnet):
    model, variables, x, forward = alexnet
    apply = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, _ = apply(variables, x, jax.random.key(1))
    b, _ = apply(variables, x, jax.random.key(2))
    assert a.shape == (2, 10) and bool(jnp.all(jnp.isfinite(a)))
    assert not np.allclose(a, b)  # dropout is active and depends on the rng
    assert not np.allclose(a, forward(variables, x)[0])


@pytest.mark.parametrize("name", ["alexnet", "alexnet_twotower", "zfnet"])
def test_min_size(name):
    model = jaxcnn.create_model(name)
    shapes = variable_shapes(model, MIN)  # traces the forward pass at 63 px: every map is non-empty
    _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, MIN, MIN, 3), jnp.float32))
    assert feats["pool5"].shape[1:3] == (1, 1)
    with pytest.raises(ValueError, match="at least 63x63"):
        jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, MIN - 1, MIN, 3), jnp.float32))


# ----------------------------------------------------------------------------
# ZFNet


def test_zfnet_map_sizes_at_224():
    model = jaxcnn.create_model("zfnet")
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    logits, feats = jax.eval_shape(model.apply, variable_shapes(model, 224), x)
    assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
    assert set(feats) == FEATS_PAPER
    sizes = {"conv1": (110, 96), "pool1": (55, 96), "norm1": (55, 96), "conv2": (26, 256), "pool2": (13, 256),
             "norm2": (13, 256), "conv3": (13, 384), "conv4": (13, 384), "conv5": (13, 256), "pool5": (6, 256)}
    for key, (s, c) in sizes.items():
        assert feats[key].shape == (2, s, s, c), key
    assert feats["pre_logits"].shape == (2, 4096)


def test_twotower_map_sizes_at_224():
    model = jaxcnn.create_model("alexnet_twotower")
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    _, feats = jax.eval_shape(model.apply, variable_shapes(model, 224), x)
    assert set(feats) == FEATS_PAPER
    for key, s in [("conv1", 55), ("norm1", 55), ("pool1", 27), ("conv2", 27), ("pool2", 13), ("conv5", 13),
                   ("pool5", 6)]:
        assert feats[key].shape[1:3] == (s, s), key


# ----------------------------------------------------------------------------
# independent float64 NumPy reference


def np_conv(x, w, b, stride, pad, groups):
    """Grouped conv of x (H, W, C) with w (kh, kw, C // groups, O): patches at each output position, einsum."""
    kh, kw, cg, co = w.shape
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    oh, ow = (xp.shape[0] - kh) // stride + 1, (xp.shape[1] - kw) // stride + 1
    patches = np.empty((oh, ow, kh, kw, x.shape[2]))
    for i in range(oh):
        for j in range(ow):
            patches[i, j] = xp[i * stride:i * stride + kh, j * stride:j * stride + kw]
    og = co // groups
    out = [np.einsum("ijabc,abco->ijo", patches[..., g * cg:(g + 1) * cg], w[..., g * og:(g + 1) * og])
           for g in range(groups)]
    return np.concatenate(out, axis=-1) + b


def np_lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1):
    """b_i = a_i / (k + alpha * sum_{j = i - size//2}^{i + (size-1)//2} a_j^2) ** beta, j within i's tower."""
    out = np.empty_like(x)
    per = x.shape[-1] // groups
    for c in range(x.shape[-1]):
        first, last = (c // per) * per, (c // per) * per + per - 1
        s = np.zeros(x.shape[:-1])
        for j in range(c - size // 2, c + (size - 1) // 2 + 1):
            if first <= j <= last:
                s += x[..., j] ** 2
        out[..., c] = x[..., c] / (k + alpha * s) ** beta
    return out


def np_maxpool(x, k=3, s=2):
    oh, ow = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.empty((oh, ow, x.shape[2]))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = x[i * s:i * s + k, j * s:j * s + k].max(axis=(0, 1))
    return out


def np_adaptive_avg(x, n=6):
    h, w = x.shape[:2]
    out = np.empty((n, n, x.shape[2]))
    for i in range(n):
        for j in range(n):
            hs, he = (i * h) // n, math.ceil((i + 1) * h / n)
            ws, we = (j * w) // n, math.ceil((j + 1) * w / n)
            out[i, j] = x[hs:he, ws:we].mean(axis=(0, 1))
    return out


def np_twotower(p, img):
    """The 2012 paper's net in float64; returns the named activations."""
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    f = {}
    x = f["conv1"] = relu(np_conv(img, *p["conv1"], 4, 2, 1))
    x = f["norm1"] = np_lrn(x, groups=2)
    x = f["pool1"] = np_maxpool(x)
    x = f["conv2"] = relu(np_conv(x, *p["conv2"], 1, 2, 2))
    x = f["norm2"] = np_lrn(x, groups=2)
    x = f["pool2"] = np_maxpool(x)
    x = f["conv3"] = relu(np_conv(x, *p["conv3"], 1, 1, 1))
    x = f["conv4"] = relu(np_conv(x, *p["conv4"], 1, 1, 2))
    x = f["conv5"] = relu(np_conv(x, *p["conv5"], 1, 1, 2))
    x = f["pool5"] = np_maxpool(x)
    x = np_adaptive_avg(x).transpose(2, 0, 1).reshape(-1)  # torch's (C, H, W) flatten
    x = f["fc6"] = relu(x @ p["fc6"][0] + p["fc6"][1])
    x = f["fc7"] = relu(x @ p["fc7"][0] + p["fc7"][1])
    f["logits"] = x @ p["fc8"][0] + p["fc8"][1]
    return f


TOWER_SIZE = 99  # conv1 24, pool1 11, pool2 5, pool5 2 (so the adaptive pool upsamples with overlap)


@pytest.fixture(scope="module")
def twotower_vs_numpy():
    model = jaxcnn.create_model("alexnet_twotower")
    variables = jaxcnn.init_variables(model, TOWER_SIZE, seed=3)
    # scaled so that conv1's activations reach ~50 and LRN's denominator is far from k**beta
    img = 300.0 * np.random.default_rng(0).standard_normal((TOWER_SIZE, TOWER_SIZE, 3))
    logits, feats = jax.jit(model.apply)(variables, jnp.asarray(img[None], jnp.float32))
    params = {k: (np.asarray(v["kernel"], np.float64), np.asarray(v["bias"], np.float64))
              for k, v in variables["params"].items()}
    return {"logits": logits, **feats}, np_twotower(params, img)


@pytest.mark.parametrize("key", ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5",
                                 "pool5", "fc6", "fc7", "logits"])
def test_twotower_equals_float64_numpy(twotower_vs_numpy, key):
    got, want = twotower_vs_numpy
    got, want = np.asarray(got[key][0], np.float64), want[key]
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    assert scale > 0
    assert np.max(np.abs(got - want)) <= 1e-5 * scale, key


def test_twotower_reference_is_sensitive(twotower_vs_numpy):
    """The reference check can fail: LRN changes the maps a lot, and towers differ from one big group."""
    _, want = twotower_vs_numpy
    assert np.max(np.abs(want["norm1"] - want["conv1"])) > 0.2 * np.max(np.abs(want["conv1"]))
    # LRN over all 96 channels differs from LRN within each 48-channel tower at the tower boundary
    one_tower = np_lrn(want["conv1"], groups=1)
    assert np.max(np.abs(one_tower - want["norm1"])) > 1e-3 * np.max(np.abs(want["norm1"]))


# ----------------------------------------------------------------------------
# layers.local_response_norm


@pytest.mark.parametrize("size,groups", [(5, 1), (5, 2), (4, 2), (3, 4)])
def test_local_response_norm_matches_brute_force(size, groups):
    rng = np.random.default_rng(size * 10 + groups)
    x = 40.0 * rng.standard_normal((2, 3, 4, 16))
    alpha, beta, k = 3e-4, 0.75, 2.0
    got = layers.local_response_norm(jnp.asarray(x, jnp.float32), size=size, alpha=alpha, beta=beta, k=k,
                                     groups=groups)
    want = np_lrn(x, size=size, alpha=alpha, beta=beta, k=k, groups=groups)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_local_response_norm_keeps_dtype_and_rejects_bad_groups():
    x = jnp.ones((1, 2, 2, 6), jnp.bfloat16)
    assert layers.local_response_norm(x, groups=2).dtype == jnp.bfloat16
    with pytest.raises(ValueError):
        layers.local_response_norm(x, groups=4)
