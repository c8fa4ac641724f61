"""AlexNet family: torchvision's net (parity is in test_parity.py), the two-tower net, ZFNet.

The key check is an independent float64 NumPy forward pass of the papers'
nets (grouped convolution on extracted patches, LRN channel by channel within
each tower, max and adaptive pooling by loops), written here from the papers'
definitions and run on the modules' own initial weights.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import layers
from jaxcnn.models import alexnet as alexnet_module
from jaxcnn.weights.torchvision import variable_shapes

NAMES = ["alexnet", "alexnet_twotower", "zfnet"]
MIN = 63
FEATS_TV = {"conv1", "conv2", "conv3", "conv4", "conv5", "pool1", "pool2", "pool5", "fc6", "fc7", "pre_logits"}
FEATS_PAPER = FEATS_TV | {"norm1", "norm2"}
SIZE = 64  # the generic checks' input: every map non-empty (pool5 1x1)


# ----------------------------------------------------------------------------
# parameter counts and initialisation


def _formula(convs, num_classes=1000):
    """Parameters of (out, in, k, groups) convolutions with biases, then fc 9216-4096-4096-classes."""
    n = sum(o * (i // g) * k * k + o for o, i, k, g in convs)
    return n + sum(i * o + o for i, o in [(256 * 6 * 6, 4096), (4096, 4096), (4096, num_classes)])


@pytest.mark.parametrize("name,convs,expected", [
    ("alexnet", [(64, 3, 11, 1), (192, 64, 5, 1), (384, 192, 3, 1), (256, 384, 3, 1), (256, 256, 3, 1)],
     61_100_840),  # torchvision's count
    ("alexnet_twotower", [(96, 3, 11, 1), (256, 96, 5, 2), (384, 256, 3, 1), (384, 384, 3, 2), (256, 384, 3, 2)],
     60_965_224),  # the paper's "60 million"
    ("zfnet", [(96, 3, 7, 1), (256, 96, 5, 1), (384, 256, 3, 1), (384, 384, 3, 1), (256, 384, 3, 1)],
     62_357_608),
])
def test_parameter_counts(name, convs, expected):
    assert _formula(convs) == expected
    assert jaxcnn.count_params(variable_shapes(jaxcnn.create_model(name), 224)) == expected
    shapes = variable_shapes(jaxcnn.create_model(name, num_classes=10), MIN)
    assert jaxcnn.count_params(shapes) == _formula(convs, num_classes=10)


# ----------------------------------------------------------------------------
# shared initial weights: one init per model (tens of millions of parameters) for the whole file


@pytest.fixture(scope="module")
def initialised():
    cache = {}

    def get(name):
        if name not in cache:
            model = jaxcnn.create_model(name, num_classes=10)
            x = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
            # an rbg key: XLA compiles threefry over ~60M parameters several times slower on CPU
            init = jax.jit(lambda key: model.init(key, x, train=False))
            cache[name] = model, init(jax.random.key(0, impl="rbg"))
        return cache[name]

    yield get
    cache.clear()


def test_twotower_kernels_and_init_are_the_papers(initialised):
    params = initialised("alexnet_twotower")[1]["params"]
    # a grouped layer's kernel sees only its own tower's half of the input channels
    shapes = {k: v["kernel"].shape for k, v in params.items()}
    assert shapes["conv1"] == (11, 11, 3, 96) and shapes["conv2"] == (5, 5, 48, 256)
    assert shapes["conv3"] == (3, 3, 256, 384)  # conv3 sees both towers
    assert shapes["conv4"] == (3, 3, 192, 384) and shapes["conv5"] == (3, 3, 192, 256)
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        bias = np.asarray(params[layer]["bias"])
        want = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert np.all(bias == want), layer
        kernel = np.asarray(params[layer]["kernel"])
        assert abs(kernel.std() - 0.01) < 1e-3 and abs(kernel.mean()) < 1e-3, layer


def test_zfnet_init_is_the_papers(initialised):
    params = initialised("zfnet")[1]["params"]
    assert list(params) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    for layer, p in params.items():
        assert np.all(np.asarray(p["bias"]) == 0.0), layer
        assert abs(np.asarray(p["kernel"]).std() - 0.01) < 1e-3, layer


def test_alexnet_init_is_torchs_default(initialised):
    """kaiming_uniform(a=sqrt(5)) weights and U(+-1/sqrt(fan_in)) biases: both uniform within 1/sqrt(fan_in)."""
    params = initialised("alexnet")[1]["params"]
    fan_ins = {"features.0": 3 * 121, "features.3": 64 * 25, "features.6": 192 * 9, "features.8": 384 * 9,
               "features.10": 256 * 9, "classifier.1": 9216, "classifier.4": 4096, "classifier.6": 4096}
    assert set(params) == set(fan_ins)
    for layer, fan_in in fan_ins.items():
        bound = 1 / math.sqrt(fan_in)
        for kind in ("kernel", "bias"):
            a = np.asarray(params[layer][kind])
            assert np.abs(a).max() <= bound, (layer, kind)
            if a.size >= 64:  # (the 10-class head's bias is too short for this)
                assert np.abs(a).max() > 0.9 * bound and abs(a.std() - bound / math.sqrt(3)) < 0.1 * bound, (
                    layer, kind)


# ----------------------------------------------------------------------------
# generic checks, one jitted forward per model


@pytest.fixture(scope="module", params=NAMES)
def net(request, initialised):
    name = request.param
    model, variables = initialised(name)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)), jnp.float32)
    forward = jax.jit(functools.partial(model.apply, train=False))
    logits, feats = forward(variables, x)
    return name, model, variables, x, logits, feats


def test_outputs(net):
    name, _, variables, _, logits, feats = net
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert set(feats) == (FEATS_TV if name == "alexnet" else FEATS_PAPER)
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree_util.tree_leaves((logits, feats)))
    assert feats["pool5"].shape == (2, 1, 1, 256)
    for key in ("fc6", "fc7", "pre_logits"):
        assert feats[key].shape == (2, 4096), key
    for key in ("conv1", "conv5", "fc6", "fc7"):
        assert float(jnp.min(feats[key])) >= 0 and float(jnp.max(feats[key])) > 0, key  # post-ReLU, alive
    last = variables["params"]["classifier.6" if name == "alexnet" else "fc8"]
    np.testing.assert_allclose(feats["pre_logits"] @ last["kernel"] + last["bias"], logits, rtol=1e-4,
                               atol=1e-4 * float(jnp.abs(logits).max()))


def test_alexnet_feature_shapes(initialised):
    model, variables = initialised("alexnet")
    _, feats = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32))
    # 64 px: conv1 15, pool1 7, pool2 3, pool5 1
    for key, shape in [("conv1", (2, 15, 15, 64)), ("pool1", (2, 7, 7, 64)), ("conv2", (2, 7, 7, 192)),
                       ("pool2", (2, 3, 3, 192)), ("conv3", (2, 3, 3, 384)), ("conv4", (2, 3, 3, 256)),
                       ("conv5", (2, 3, 3, 256))]:
        assert feats[key].shape == shape, key


def test_bfloat16_close_to_float32(net):
    name, _, variables, x, logits32, _ = net
    bf16 = jaxcnn.create_model(name, num_classes=10, dtype="bfloat16")
    logits16, feats16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert feats16["conv5"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    if name != "alexnet":
        assert feats16["norm1"].dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(logits32)))
    assert scale > 0
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 5e-2 * scale


def test_dropout_in_train_mode(net):
    _, model, variables, x, logits, _ = net
    apply = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, _ = apply(variables, x, jax.random.key(1))
    b, _ = apply(variables, x, jax.random.key(2))
    assert a.shape == (2, 10) and bool(jnp.all(jnp.isfinite(a)))
    assert not np.allclose(a, b)  # dropout is active and depends on the rng
    assert not np.allclose(a, logits)


@pytest.mark.parametrize("name", NAMES)
def test_min_size(name, monkeypatch):
    model = jaxcnn.create_model(name)
    shapes = variable_shapes(model, MIN)  # traces the forward pass at 63 px: every map is non-empty
    _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, MIN, MIN, 3), jnp.float32))
    assert feats["pool5"].shape[1:3] == (1, 1)
    for h, w in [(MIN - 1, MIN), (MIN, MIN - 1)]:
        with pytest.raises(ValueError, match="at least 63x63"):
            jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    # the bound is tight: without the check, 62 px leaves pool5 empty (or the layers fail)
    monkeypatch.setattr(alexnet_module, "check_images", lambda x, **_: jnp.asarray(x))
    small = jax.ShapeDtypeStruct((1, MIN - 1, MIN - 1, 3), jnp.float32)
    try:
        _, feats = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], small)
    except Exception as e:  # noqa: BLE001  (a layer refusing an empty map is what we expect too)
        assert "at least" not in str(e)  # (the input check really is off)
        return
    assert 0 in feats["pool5"].shape


# ----------------------------------------------------------------------------
# map sizes at 224 px


def test_zfnet_map_sizes_at_224():
    """The paper's Figure 3: 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 13 -> 6."""
    model = jaxcnn.create_model("zfnet")
    logits, feats = jax.eval_shape(model.apply, variable_shapes(model, 224),
                                   jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
    assert set(feats) == FEATS_PAPER
    sizes = {"conv1": (110, 96), "pool1": (55, 96), "norm1": (55, 96), "conv2": (26, 256), "pool2": (13, 256),
             "norm2": (13, 256), "conv3": (13, 384), "conv4": (13, 384), "conv5": (13, 256), "pool5": (6, 256)}
    for key, (s, c) in sizes.items():
        assert feats[key].shape == (2, s, s, c), key
    assert feats["pre_logits"].shape == (2, 4096)


def test_twotower_map_sizes_at_224():
    """The paper's Figure 2: 55x55x96, 27x27x256, 13x13x384, 13x13x384, 13x13x256, pool5 6x6."""
    model = jaxcnn.create_model("alexnet_twotower")
    _, feats = jax.eval_shape(model.apply, variable_shapes(model, 224),
                              jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert set(feats) == FEATS_PAPER
    sizes = {"conv1": (55, 96), "norm1": (55, 96), "pool1": (27, 96), "conv2": (27, 256), "norm2": (27, 256),
             "pool2": (13, 256), "conv3": (13, 384), "conv4": (13, 384), "conv5": (13, 256), "pool5": (6, 256)}
    for key, (s, c) in sizes.items():
        assert feats[key].shape == (1, s, s, c), key


def test_twotower_towers_do_not_talk(initialised):
    """Changing tower B's kernels leaves tower A alone until the towers meet (conv3, then fc6)."""
    model, variables = initialised("alexnet_twotower")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, SIZE, SIZE, 3)), jnp.float32)
    forward = jax.jit(model.apply)
    feats = forward(variables, x)[1]

    def scale_tower_b(layer, start):
        params = dict(variables["params"])
        params[layer] = {**params[layer], "kernel": params[layer]["kernel"].at[..., start:].multiply(3.0)}
        return forward({"params": params}, x)[1]

    # tower B of conv1 -> conv1 ... pool2 of tower A unchanged (grouped conv2, LRN within a tower), conv3 changed
    changed = scale_tower_b("conv1", 48)
    for key, h in {"conv1": 48, "norm1": 48, "pool1": 48, "conv2": 128, "norm2": 128, "pool2": 128}.items():
        np.testing.assert_array_equal(changed[key][..., :h], feats[key][..., :h], err_msg=key)
        assert not np.allclose(changed[key][..., h:], feats[key][..., h:]), key
    assert not np.allclose(changed["conv3"][..., :192], feats["conv3"][..., :192])  # conv3 sees both towers
    # tower B of conv3 -> conv4 and conv5 of tower A unchanged, fc6 changed
    changed = scale_tower_b("conv3", 192)
    for key, h in {"conv3": 192, "conv4": 192, "conv5": 128, "pool5": 128}.items():
        np.testing.assert_array_equal(changed[key][..., :h], feats[key][..., :h], err_msg=key)
        assert not np.allclose(changed[key][..., h:], feats[key][..., h:]), key
    assert not np.allclose(changed["fc6"], feats["fc6"])


# ----------------------------------------------------------------------------
# independent float64 NumPy reference of the papers' nets


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


def np_maxpool(x, k=3, s=2, ceil=False):
    """Max pool; ``ceil`` adds a last, clipped window when it starts inside the map (Caffe / torch ceil_mode)."""
    def n_out(size):
        n = (size - k) // s + 1
        return n + 1 if ceil and (size - k) % s and n * s < size else n
    oh, ow = n_out(x.shape[0]), n_out(x.shape[1])
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


def np_paper_net(name, p, img):
    """Krizhevsky et al. 2012 (two towers) or Zeiler & Fergus 2013 in float64; returns the named activations."""
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    f = {}
    if name == "alexnet_twotower":
        x = f["conv1"] = relu(np_conv(img, *p["conv1"], stride=4, pad=2, groups=1))
        x = f["norm1"] = np_lrn(x, groups=2)
        x = f["pool1"] = np_maxpool(x)
        x = f["conv2"] = relu(np_conv(x, *p["conv2"], stride=1, pad=2, groups=2))
        x = f["norm2"] = np_lrn(x, groups=2)
        x = f["pool2"] = np_maxpool(x)
        towers = 2
    else:
        x = f["conv1"] = relu(np_conv(img, *p["conv1"], stride=2, pad=1, groups=1))
        x = f["pool1"] = np_maxpool(x, ceil=True)
        x = f["norm1"] = np_lrn(x)
        x = f["conv2"] = relu(np_conv(x, *p["conv2"], stride=2, pad=0, groups=1))
        x = f["pool2"] = np_maxpool(x, ceil=True)
        x = f["norm2"] = np_lrn(x)
        towers = 1
    x = f["conv3"] = relu(np_conv(x, *p["conv3"], stride=1, pad=1, groups=1))
    x = f["conv4"] = relu(np_conv(x, *p["conv4"], stride=1, pad=1, groups=towers))
    x = f["conv5"] = relu(np_conv(x, *p["conv5"], stride=1, pad=1, groups=towers))
    x = f["pool5"] = np_maxpool(x)
    x = np_adaptive_avg(x).transpose(2, 0, 1).reshape(-1)  # torch's (C, H, W) flatten
    x = f["fc6"] = relu(x @ p["fc6"][0] + p["fc6"][1])
    x = f["fc7"] = relu(x @ p["fc7"][0] + p["fc7"][1])
    f["logits"] = x @ p["fc8"][0] + p["fc8"][1]
    return f


# 99 px: two-tower conv1 24, pool1 11, pool2 5, pool5 2; ZFNet conv1 48, pool1 24, conv2 10, pool2 5, pool5 2
# (both ceil-mode pools use a clipped last window); pool5 2x2 -> the adaptive pool upsamples with overlap
REF_SIZE = 99
REF_KEYS = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7",
            "logits"]


@pytest.fixture(scope="module", params=["alexnet_twotower", "zfnet"])
def paper_vs_numpy(request, initialised):
    name = request.param
    model, variables = initialised(name)  # the weights do not depend on the input size
    # scaled so that conv1's activations are large and LRN's denominator is far from k**beta
    img = (300.0 if name == "alexnet_twotower" else 1000.0) * np.random.default_rng(0).standard_normal(
        (REF_SIZE, REF_SIZE, 3))
    logits, feats = jax.jit(model.apply)(variables, jnp.asarray(img[None], jnp.float32))
    params = {k: (np.asarray(v["kernel"], np.float64), np.asarray(v["bias"], np.float64))
              for k, v in variables["params"].items()}
    return name, {"logits": logits, **feats}, np_paper_net(name, params, img)


@pytest.mark.parametrize("key", REF_KEYS)
def test_paper_net_equals_float64_numpy(paper_vs_numpy, key):
    _, got, want = paper_vs_numpy
    got, want = np.asarray(got[key][0], np.float64), want[key]
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    assert scale > 0
    assert np.max(np.abs(got - want)) <= 1e-5 * scale, key


def test_paper_net_reference_is_sensitive(paper_vs_numpy):
    """The reference check can fail: LRN changes the maps a lot, towers differ from one group, ceil matters."""
    name, _, want = paper_vs_numpy
    before_norm = want["conv1"] if name == "alexnet_twotower" else want["pool1"]
    assert np.max(np.abs(want["norm1"] - before_norm)) > 0.2 * np.max(np.abs(before_norm))
    if name == "alexnet_twotower":
        # LRN over all 96 channels differs from LRN within each 48-channel tower at the tower boundary
        one_tower = np_lrn(want["conv1"], groups=1)
        assert np.max(np.abs(one_tower - want["norm1"])) > 1e-3 * np.max(np.abs(want["norm1"]))
    else:
        assert want["pool1"].shape[0] == np_maxpool(want["conv1"]).shape[0] + 1  # a clipped ceil window


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
    if groups > 1:  # the towers matter: one group over all channels gives something else
        assert not np.allclose(np_lrn(x, size=size, alpha=alpha, beta=beta, k=k), want, rtol=1e-3)


def test_local_response_norm_keeps_dtype_and_rejects_bad_groups():
    x = jnp.ones((1, 2, 2, 6), jnp.bfloat16)
    assert layers.local_response_norm(x, groups=2).dtype == jnp.bfloat16
    with pytest.raises(ValueError):
        layers.local_response_norm(x, groups=4)
