"""FCN family: FCN-32s/16s/8s on VGG-16 (no torchvision twin) and torchvision's FCN-ResNet.

FCN-ResNet parity with torchvision is in test_parity.py. FCN-VGG is checked
against what it is made of: a vgg16 checkpoint (fcn_from_vgg16), bilinear
interpolation written out below, and the paper's parameter count.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.layers import conv, flatten_chw, resize_bilinear
from jaxcnn.models.fcn import bilinear_kernel, fcn_from_vgg16, upsample, upsampling_layer

VGG_FCNS = ("fcn32s", "fcn16s", "fcn8s")
NAMES = VGG_FCNS + ("fcn_resnet50", "fcn_resnet101")
K = 5  # classes in the numeric tests
HW = (37, 45)  # odd sizes: every ceil-mode pool and every crop is exercised


def _init_shapes(name, hw, batch=1, **options):
    model = jaxcnn.create_model(name, **options)
    x = jax.ShapeDtypeStruct((batch, *hw, 3), jnp.float32)
    (logits, feats), variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    return logits, feats, variables


def bilinear_reference(x, factor, height, width):
    """Bilinear upsampling by ``factor`` (align_corners=False, edges clamped) written out in NumPy.

    Output pixel o of an axis samples the input at s = (o + 0.5) / f - 0.5.
    """
    def weights(n, out):
        s = (np.arange(out) + 0.5) / factor - 0.5
        i0 = np.floor(s).astype(int)
        t = s - i0
        w = np.zeros((out, n))
        np.add.at(w, (np.arange(out), np.clip(i0, 0, n - 1)), 1 - t)
        np.add.at(w, (np.arange(out), np.clip(i0 + 1, 0, n - 1)), t)
        return w
    x = np.asarray(x, np.float64)
    return np.einsum("ph,qw,nhwc->npqc", weights(x.shape[1], height), weights(x.shape[2], width), x)


# ----------------------------------------------------------------------------
# shapes, features, parameter counts (no allocation)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", [(33, 47), (64, 64), (1, 1)])
def test_logits_have_the_input_size(name, hw):
    logits, _, _ = _init_shapes(name, hw, num_classes=K)
    assert logits.shape == (1, *hw, K) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_empty_image_is_rejected(name):
    with pytest.raises(ValueError, match="at least 1x1"):
        _init_shapes(name, (0, 8))


def test_vgg_fcn_features_and_strides():
    h, w = 70, 100  # ceil(70 / 2**k), ceil(100 / 2**k)
    size = {k: (-(-h // 2 ** k), -(-w // 2 ** k)) for k in range(6)}
    vgg = {f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)}
    vgg |= {f"pool{b}" for b in range(1, 6)} | {"fc6", "fc7", "score_fr"}
    skip4 = {"upscore2", "score_pool4", "fuse_pool4"}
    skip3 = {"upscore_pool4", "score_pool3", "fuse_pool3"}
    for name, keys in [("fcn32s", vgg), ("fcn16s", vgg | skip4), ("fcn8s", vgg | skip4 | skip3)]:
        _, feats, variables = _init_shapes(name, (h, w), num_classes=K)
        assert set(feats) == keys, name
        for b in range(1, 6):
            assert feats[f"pool{b}"].shape == (1, *size[b], 512 if b > 3 else 64 * 2 ** (b - 1))
        assert feats["fc6"].shape == feats["fc7"].shape == (1, *size[5], 4096)
        assert feats["score_fr"].shape == (1, *size[5], K)
        for key, k in [("upscore2", 4), ("score_pool4", 4), ("fuse_pool4", 4), ("upscore_pool4", 3),
                       ("score_pool3", 3), ("fuse_pool3", 3)]:
            if key in feats:
                assert feats[key].shape == (1, *size[k], K), (name, key)
        final = {"fcn32s": "upscore32", "fcn16s": "upscore16", "fcn8s": "upscore8"}[name]
        assert variables["params"][final]["kernel"].shape == (2 * 32 // 2 ** VGG_FCNS.index(name),) * 2 + (K, K)


def test_resnet_fcn_features_and_aux_option():
    _, feats, variables = _init_shapes("fcn_resnet50", (70, 100), num_classes=K)
    assert set(feats) == {"layer1", "layer2", "layer3", "layer4", "head", "aux_head", "aux"}
    assert feats["layer1"].shape == (1, 18, 25, 256)
    assert feats["layer3"].shape == (1, 9, 13, 1024) and feats["layer4"].shape == (1, 9, 13, 2048)  # dilated
    assert feats["head"].shape == feats["aux_head"].shape == (1, 9, 13, K)
    assert feats["aux"].shape == (1, 70, 100, K) and feats["aux"].dtype == jnp.float32
    assert "backbone" in variables["params"] and "aux_classifier" in variables["params"]
    assert "fc" not in variables["params"]["backbone"]
    _, feats, variables = _init_shapes("fcn_resnet50", (70, 100), num_classes=K, aux_loss=False)
    assert set(feats) == {"layer1", "layer2", "layer3", "layer4", "head"}
    assert "aux_classifier" not in variables["params"]


def _vgg_fcn_param_count(skips, k):
    convs, cin = 0, 3
    for cout in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512):
        convs, cin = convs + 9 * cin * cout + cout, cout
    fc = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * k + k)
    skip_scores = [512 * k + k, 256 * k + k][:skips]
    factors = [2, 2][:skips] + [32 // 2 ** skips]
    return convs + fc + sum(skip_scores) + sum((2 * f) ** 2 * k * k for f in factors)


@pytest.mark.parametrize("name,expected", [
    ("fcn32s", _vgg_fcn_param_count(0, 21)), ("fcn16s", _vgg_fcn_param_count(1, 21)),
    ("fcn8s", _vgg_fcn_param_count(2, 21)),
    # torchvision's num_params (with the aux head), and its model built with aux_loss=False
    ("fcn_resnet50", 35_322_218), ("fcn_resnet101", 54_314_346)])
def test_parameter_counts(name, expected):
    _, _, variables = _init_shapes(name, (32, 32))
    assert jaxcnn.count_params(variables) == expected
    if name.startswith("fcn_resnet"):
        _, _, variables = _init_shapes(name, (32, 32), aux_loss=False)
        assert jaxcnn.count_params(variables) == {"fcn_resnet50": 32_957_013, "fcn_resnet101": 51_949_141}[name]
    else:  # vgg16 without its last Linear: the paper's "134M" of FCN-VGG16, before scores and upsampling
        assert _vgg_fcn_param_count(0, 0) == 138_357_544 - (4096 * 1000 + 1000)


# ----------------------------------------------------------------------------
# bilinear upsampling


@pytest.mark.parametrize("factor,n,m,height,width", [(2, 5, 6, 9, 12), (8, 4, 3, 29, 17), (32, 2, 3, 33, 65)])
def test_upsampling_is_bilinear_interpolation_at_init(factor, n, m, height, width):
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    smooth = np.stack([np.sin(0.9 * i + 0.3) * np.cos(0.7 * j), 0.5 * i - 2.0 * j + 0.1 * i * j], -1)
    x = jnp.asarray(np.stack([smooth, -smooth]), jnp.float32)  # (2, n, m, 2): channels must not mix
    layer = upsampling_layer(factor, 2)
    variables = layer.init(jax.random.key(0), x)
    y = upsample(functools.partial(layer.apply, variables), x, factor, height, width)
    assert y.shape == (2, height, width, 2)
    np.testing.assert_allclose(y, bilinear_reference(x, factor, height, width), atol=1e-5)
    # on a whole multiple it is torch's F.interpolate(mode="bilinear", align_corners=False)
    full = upsample(functools.partial(layer.apply, variables), x, factor, factor * n, factor * m)
    np.testing.assert_allclose(full, resize_bilinear(x, factor * n, factor * m), atol=1e-5)


def test_bilinear_kernel_is_per_class():
    k = bilinear_kernel(4, 3)
    assert k.shape == (8, 8, 3, 3)
    off_diagonal = k * (1 - np.eye(3))
    assert not off_diagonal.any()
    filt = np.array([1, 3, 5, 7, 7, 5, 3, 1]) / 8
    for c in range(3):
        np.testing.assert_allclose(k[:, :, c, c], np.outer(filt, filt))


def test_upsampling_rejects_a_target_it_cannot_cover():
    x = jnp.zeros((1, 2, 2, 1))
    layer = upsampling_layer(2, 1)
    variables = layer.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="cannot upsample"):
        upsample(functools.partial(layer.apply, variables), x, 2, 5, 4)


# ----------------------------------------------------------------------------
# FCN-VGG numerics, built from a vgg16 checkpoint as in the paper


def _numpy_variables(shapes, seed):
    """Stand-in trained weights, drawn with NumPy, for a tree of variable shapes.

    Kernels He-uniform (fan in), biases U(-0.1, 0.1), BN scale 1, shift 0,
    mean 0, var 1. Drawing them through the models' own initialisers costs
    seconds of RNG compilation and sampling per model on a CPU; these tests
    only need weights that are random and keep activations in range.
    """
    rng = np.random.default_rng(seed)

    def uniform(shape, bound):
        a = rng.random(shape, dtype=np.float32)
        a -= 0.5
        a *= 2 * bound
        return a

    def layer(tree):
        out = {}
        for leaf, spec in tree.items():
            if leaf == "kernel":
                out[leaf] = uniform(spec.shape, np.sqrt(6.0 / np.prod(spec.shape[:-1])))
            elif leaf == "bias" and "kernel" in tree:
                out[leaf] = uniform(spec.shape, 0.1)
            else:
                out[leaf] = np.full(spec.shape, 1.0 if leaf in ("scale", "var") else 0.0, np.float32)
        return out

    def fill(tree):
        leaves = any(not isinstance(v, dict) for v in tree.values())
        return layer(tree) if leaves else {k: fill(v) for k, v in tree.items()}

    return fill(shapes)


def _real_init(model, keep, hw=(32, 32)):
    """``model.init``'s values for the top-level modules named in ``keep``; other leaves as shapes.

    Only the kept initialisers are compiled and run: XLA drops the others.
    """
    x = jnp.zeros((1, *hw, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))

    def init(key):
        return {c: {n: v for n, v in tree.items() if n in keep} for c, tree in model.init(key, x).items()}

    real = jax.jit(init)(jax.random.key(1))
    return {c: {**tree, **real.get(c, {})} for c, tree in shapes.items()}


def _is_vgg(name):
    return name.startswith(("features.", "fc6", "fc7"))


def _trained_scores(params, seed=0):
    """Random class scoring layers, as after some training (at init they are all zero)."""
    params = dict(params)
    for i, name in enumerate(n for n in ("score_fr", "score_pool4", "score_pool3") if n in params):
        kernel = jax.random.normal(jax.random.key(seed + i), params[name]["kernel"].shape) * 0.05
        params[name] = {"kernel": kernel, "bias": params[name]["bias"] + 0.1}
    return params


@pytest.fixture(scope="module")
def vgg16():
    model = jaxcnn.create_model("vgg16")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    return model, _numpy_variables(shapes, seed=7)


@pytest.fixture(scope="module")
def fcns(vgg16):
    """FCN-32s/16s/8s as in the paper: vgg16 weights plus their own (initialised) score and upsampling layers."""
    _, vgg_variables = vgg16
    out = {}
    for name in VGG_FCNS:
        model = jaxcnn.create_model(name, num_classes=K)
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
        own = _real_init(model, [n for n in shapes["params"] if not _is_vgg(n)])
        out[name] = model, fcn_from_vgg16(vgg_variables, own)
    return out


@pytest.fixture(scope="module")
def fcn8s(fcns):
    """FCN-8s on odd-sized images: the outputs and gradients at init, and with score_fr trained.

    The second case is FCN-32s after training, turned into FCN-8s with its
    skip scores at their zero init (the paper's staged training).
    """
    model, variables = fcns["fcn8s"]
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *HW, 3)), jnp.float32)
    labels = jnp.asarray(np.random.default_rng(1).integers(0, K, (2, *HW)))
    vgg_part = {n: v for n, v in variables["params"].items() if _is_vgg(n)}
    own = {n: v for n, v in variables["params"].items() if not _is_vgg(n)}

    @jax.jit
    def loss_and_grads(vgg_part, own, x):
        """Cross-entropy; its gradients w.r.t. the FCN's own layers and the input (not the VGG weights)."""
        def loss(own, x):
            logits, feats = model.apply({"params": {**vgg_part, **own}}, x)
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1)), (logits, feats)
        (_, (logits, feats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(own, x)
        return logits, feats, grads

    trained = {**own, "score_fr": _trained_scores(own)["score_fr"]}
    return dict(model=model, x=x, vgg_part=vgg_part, own=own, trained=trained,
                at_init=loss_and_grads(vgg_part, own, x), after_32s=loss_and_grads(vgg_part, trained, x))


def test_fc6_convolution_equals_vgg16s_first_linear(vgg16, fcns):
    _, vgg_variables = vgg16
    _, variables = fcns["fcn8s"]
    pool5 = jnp.asarray(np.random.default_rng(3).random((2, 7, 7, 512)), jnp.float32)
    linear = nn.Dense(4096).apply({"params": vgg_variables["params"]["classifier.0"]}, flatten_chw(pool5))
    # on a 7x7 pool5 map the 7x7 convolution's centre (its only output without padding) sees the whole
    # map, as the Linear does; the next test checks that the model's fc6 is this convolution, padded
    centre = jax.jit(conv(4096, 7).apply)({"params": variables["params"]["fc6"]}, pool5)
    assert centre.shape == (2, 1, 1, 4096)
    np.testing.assert_allclose(centre[:, 0, 0], linear, rtol=1e-5, atol=1e-5 * float(jnp.abs(linear).max()))


def test_fc6_is_that_convolution_inside_the_model(fcns, fcn8s):
    _, variables = fcns["fcn8s"]
    _, feats, _ = fcn8s["after_32s"]
    fc6 = conv(4096, 7, padding=3)
    want = jax.nn.relu(jax.jit(fc6.apply)({"params": variables["params"]["fc6"]}, feats["pool5"]))
    assert feats["fc6"].shape == want.shape == (2, 2, 2, 4096)
    np.testing.assert_allclose(feats["fc6"], want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_fcn_from_vgg16_copies_the_backbone(vgg16, fcns):
    vgg, fcn = vgg16[1]["params"], fcns["fcn8s"][1]["params"]
    for name in ("features.0", "features.28"):
        np.testing.assert_array_equal(fcn[name]["kernel"], vgg[name]["kernel"])
    w = np.asarray(vgg["classifier.0"]["kernel"])  # (512 * 7 * 7, 4096), rows in torch's (c, h, w) order
    np.testing.assert_array_equal(fcn["fc6"]["kernel"][2, 5, 300], w[300 * 49 + 2 * 7 + 5])
    np.testing.assert_array_equal(fcn["fc7"]["kernel"][0, 0], vgg["classifier.3"]["kernel"])
    np.testing.assert_array_equal(fcn["fc6"]["bias"], vgg["classifier.0"]["bias"])


def test_fcn_from_vgg16_rejects_other_checkpoints(fcns):
    _, variables = fcns["fcn32s"]
    for name in ("vgg16_bn", "vgg19"):
        other = jax.eval_shape(lambda n=name: jaxcnn.init_variables(jaxcnn.create_model(n), 32))
        with pytest.raises(ValueError, match="not vgg16"):
            fcn_from_vgg16(other, variables)


def test_initialisation(fcn8s):
    own = fcn8s["own"]
    for name in ("score_fr", "score_pool4", "score_pool3"):  # the paper zero-initialises the class scores
        assert not np.asarray(own[name]["kernel"]).any() and not np.asarray(own[name]["bias"]).any()
    for name, f in [("upscore2", 2), ("upscore_pool4", 2), ("upscore8", 8)]:
        np.testing.assert_array_equal(own[name]["kernel"], bilinear_kernel(f, K))
    logits, _, _ = fcn8s["at_init"]
    assert not np.asarray(logits).any()
    # from scratch fc6/fc7 start as vgg16's Linear layers, N(0, 0.01), the convolutions Kaiming fan-out
    variables = _real_init(fcn8s["model"], ["fc7", "features.0"])
    assert abs(float(jnp.std(variables["params"]["fc7"]["kernel"])) / 0.01 - 1) < 0.05
    assert abs(float(jnp.std(variables["params"]["features.0"]["kernel"])) / np.sqrt(2 / (9 * 64)) - 1) < 0.1


def test_skip_layers_learn_from_the_start(fcn8s):
    for case in ("at_init", "after_32s"):
        _, _, (grads, _) = fcn8s[case]
        for name in ("score_fr", "score_pool4", "score_pool3"):
            g = grads[name]["kernel"]
            assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, (case, name)


def test_skips_add_nothing_at_init(fcns, fcn8s):
    # score_fr trained, the skip scores at their zero init: FCN-16s and FCN-8s predict what FCN-32s
    # does, the same score map, only upsampled in steps
    logits8, f8, _ = fcn8s["after_32s"]
    model16, variables16 = fcns["fcn16s"]
    params16 = {**variables16["params"], "score_fr": fcn8s["trained"]["score_fr"]}
    logits16, f16 = jax.jit(model16.apply)({"params": params16}, fcn8s["x"])
    model32, variables32 = fcns["fcn32s"]
    params32 = {**variables32["params"], "score_fr": fcn8s["trained"]["score_fr"]}
    logits32, f32 = jax.jit(model32.apply)({"params": params32}, fcn8s["x"])
    score_fr = f8["score_fr"]
    assert float(jnp.abs(score_fr).max()) > 0
    np.testing.assert_array_equal(f16["score_fr"], score_fr)
    np.testing.assert_array_equal(f32["score_fr"], score_fr)
    np.testing.assert_allclose(logits32, bilinear_reference(score_fr, 32, *HW), atol=1e-5)
    for logits in (logits32, logits16, logits8):
        assert logits.shape == (2, *HW, K) and logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    for feats in (f16, f8):
        assert not np.asarray(feats["score_pool4"]).any()
        np.testing.assert_array_equal(feats["fuse_pool4"], feats["upscore2"])
    assert not np.asarray(f8["score_pool3"]).any()
    np.testing.assert_array_equal(f8["fuse_pool3"], f8["upscore_pool4"])
    up2 = bilinear_reference(score_fr, 2, *f16["pool4"].shape[1:3])
    np.testing.assert_allclose(logits16, bilinear_reference(up2, 16, *HW), atol=1e-5)
    up4 = bilinear_reference(up2, 2, *f8["pool3"].shape[1:3])
    np.testing.assert_allclose(logits8, bilinear_reference(up4, 8, *HW), atol=1e-5)


def test_fcn8s_numerics(fcn8s):
    logits, feats, (grads, grad_x) = fcn8s["after_32s"]
    assert logits.shape == (2, *HW, K) and logits.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves((logits, feats, grads, grad_x)))
    assert float(jnp.abs(grad_x).max()) > 0
    params = {**fcn8s["vgg_part"], **fcn8s["trained"]}
    bf16 = jaxcnn.create_model("fcn8s", num_classes=K, dtype="bfloat16")
    logits16, feats16 = jax.jit(bf16.apply)({"params": params}, fcn8s["x"][:1])
    assert feats16["fc7"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    assert float(jnp.abs(logits16 - logits[:1]).max()) < 5e-2 * float(jnp.abs(logits[:1]).max())


def test_fcn8s_train_mode_uses_dropout(fcn8s):
    model, x = fcn8s["model"], fcn8s["x"]
    params = {**fcn8s["vgg_part"], **fcn8s["trained"]}
    train = jax.jit(lambda params, key: model.apply({"params": params}, x, train=True, rngs={"dropout": key}))
    logits, _ = train(params, jax.random.key(0))
    assert logits.shape == (2, *HW, K) and bool(jnp.all(jnp.isfinite(logits)))
    assert not np.allclose(logits, fcn8s["after_32s"][0])


# ----------------------------------------------------------------------------
# FCN-ResNet numerics (torchvision parity: test_parity.py)


@pytest.fixture(scope="module")
def fcn_resnet50():
    """fcn_resnet50: the heads as initialised, the backbone stand-in random weights; one jitted forward + grad."""
    model = jaxcnn.create_model("fcn_resnet50", num_classes=K)
    variables = _real_init(model, ["classifier", "aux_classifier"])
    backbone = _numpy_variables({c: {"backbone": t["backbone"]} for c, t in variables.items()}, seed=5)
    variables = {c: {**t, **backbone[c]} for c, t in variables.items()}
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, *HW, 3)), jnp.float32)

    @jax.jit
    def forward_and_input_grad(variables, x):
        def logit(x):
            logits, feats = model.apply(variables, x)
            return logits[..., 1].sum(), (logits, feats)
        (_, (logits, feats)), grad = jax.value_and_grad(logit, has_aux=True)(x)
        return logits, feats, grad

    return model, variables, x, forward_and_input_grad(variables, x)


def test_resnet_fcn_forward_and_gradient(fcn_resnet50):
    _, _, _, (logits, feats, grad) = fcn_resnet50
    assert logits.shape == feats["aux"].shape == (2, *HW, K) and logits.dtype == jnp.float32
    assert feats["head"].shape == (2, 5, 6, K) and feats["layer4"].shape == (2, 5, 6, 2048)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves((logits, feats, grad)))
    assert float(jnp.abs(grad).max()) > 0
    np.testing.assert_allclose(logits, resize_bilinear(feats["head"], *HW), rtol=1e-6, atol=1e-6)


def test_resnet_fcn_heads_init_is_torchs_default(fcn_resnet50):
    _, variables, _, _ = fcn_resnet50
    for head, channels in (("classifier", 2048), ("aux_classifier", 1024)):
        p = variables["params"][head]
        bound = 1 / np.sqrt(channels * 9)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        k = np.abs(np.asarray(p["0"]["kernel"]))
        assert k.shape == (3, 3, channels, channels // 4) and 0.99 * bound < k.max() <= bound * (1 + 1e-6)
        assert "bias" not in p["0"]
        b = np.abs(np.asarray(p["4"]["bias"]))
        assert 0.5 / np.sqrt(channels // 4) < b.max() <= 1 / np.sqrt(channels // 4)  # torch's default bias
        assert np.all(np.asarray(p["1"]["scale"]) == 1) and not np.asarray(p["1"]["bias"]).any()


def test_resnet_fcn_bfloat16_close_to_float32(fcn_resnet50):
    _, variables, x, (logits32, _, _) = fcn_resnet50
    bf16 = jaxcnn.create_model("fcn_resnet50", num_classes=K, dtype="bfloat16")
    logits16, feats16 = jax.jit(bf16.apply)(variables, x[:1])
    assert feats16["layer4"].dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    assert float(jnp.abs(logits16 - logits32[:1]).max()) < 5e-2 * float(jnp.abs(logits32[:1]).max())


def test_resnet_fcn_train_mode(fcn_resnet50):
    model, variables, x, (logits_eval, _, _) = fcn_resnet50
    train = jax.jit(lambda v, key: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}))
    (logits, _), updates = train(variables, jax.random.key(0))
    assert bool(jnp.all(jnp.isfinite(logits))) and not np.allclose(logits, logits_eval)
    for path in (("backbone", "bn1"), ("classifier", "1"), ("aux_classifier", "1")):
        before, after = variables["batch_stats"], updates["batch_stats"]
        for key in path:
            before, after = before[key], after[key]
        assert not np.allclose(before["mean"], after["mean"]), path
