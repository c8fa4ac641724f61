"""VGG and FCN numerics (torchvision parity is in test_parity.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.models.fcn import Upsample, bilinear_kernel, fcn_from_vgg16


def _shapes(name, hw, **options):
    model = jaxcnn.create_model(name, **options)
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)


def test_vgg19_feature_keys_and_strides():
    (logits, feats), _ = _shapes("vgg19", (64, 64))
    convs = {f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1)}
    assert set(feats) == convs | {f"pool{b}" for b in range(1, 6)} | {"fc6", "fc7", "pre_logits"}
    assert feats["conv4_2"].shape == (1, 8, 8, 512) and feats["pool5"].shape == (1, 2, 2, 512)
    assert logits.shape == (1, 1000)
    with pytest.raises(ValueError, match="at least 32x32"):
        _shapes("vgg11", (31, 40))
    _shapes("vgg11", (32, 32))


@pytest.fixture(scope="module")
def vgg11_bn():
    model = jaxcnn.create_model("vgg11_bn", num_classes=10)
    variables = jaxcnn.init_variables(model, 32)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
    return model, variables, x


def test_vgg_numerics(vgg11_bn):
    model, variables, x = vgg11_bn
    logits, feats = jax.jit(functools.partial(model.apply, train=False))(variables, x)
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    g = jax.grad(lambda x: model.apply(variables, x)[0][:, 1].sum())(x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    (_, _), upd = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(upd["batch_stats"]["features.1"]["mean"], variables["batch_stats"]["features.1"]["mean"])


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn_resnet50"])
@pytest.mark.parametrize("hw", [(33, 47), (64, 64), (17, 9)])
def test_fcn_output_matches_input_size(name, hw):
    (logits, _), _ = _shapes(name, hw, num_classes=5)
    assert logits.shape == (1, *hw, 5)


def test_bilinear_upsampling_reproduces_linear_ramps():
    # bilinear interpolation is exact on linear functions: away from the borders the
    # upsampled ramp is the ramp sampled at the output pixel centres
    f, n = 4, 6
    ramp = np.arange(n, dtype=np.float32)
    x = jnp.asarray((ramp[:, None] * 2.0 + ramp[None, :] * 3.0)[None, :, :, None])
    up = Upsample(f)
    y, _ = up.init_with_output(jax.random.key(0), x, n * f, n * f)
    centres = (np.arange(n * f) + 0.5) / f - 0.5
    want = centres[:, None] * 2.0 + centres[None, :] * 3.0
    inner = slice(f, n * f - f)
    np.testing.assert_allclose(np.asarray(y)[0, inner, inner, 0], want[inner, inner], atol=1e-5)
    k = bilinear_kernel(2, 3)
    assert k.shape == (4, 4, 3, 3) and k[:, :, 0, 1].sum() == 0 and np.isclose(k[:, :, 1, 1].sum(), 4.0)


@pytest.fixture(scope="module")
def fcns():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 40, 40, 3)), jnp.float32)
    vgg = jaxcnn.create_model("vgg16")
    vgg_vars = jaxcnn.init_variables(vgg, 32, seed=1)
    out = {}
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        model = jaxcnn.create_model(name, num_classes=4)
        variables = fcn_from_vgg16(vgg_vars, jaxcnn.init_variables(model, 32))
        out[name] = (model, variables)
    return x, vgg, vgg_vars, out


def test_skip_scores_start_at_zero(fcns):
    x, _, _, models = fcns
    for name in ("fcn16s", "fcn8s"):
        model, v = models[name]
        p = dict(v["params"])  # score_fr is zero-initialised too: give it weights so the check means something
        p["score_fr"] = {"kernel": jax.random.normal(jax.random.key(3), p["score_fr"]["kernel"].shape) * 0.01,
                         "bias": p["score_fr"]["bias"]}
        _, feats = model.apply({"params": p}, x)
        assert float(jnp.abs(feats["score_pool4"]).max()) == 0.0
        pool4 = feats["pool4"]
        up = Upsample(2).apply({"params": p["upscore_pool5"]}, feats["score_fr"], pool4.shape[1], pool4.shape[2])
        np.testing.assert_allclose(feats["fuse_pool4"], up, atol=1e-7)  # the fusion adds exactly nothing yet
        assert float(jnp.abs(up).max()) > 0


def test_fc6_conv_equals_vgg_classifier(fcns):
    _, vgg, vgg_vars, models = fcns
    model, variables = models["fcn32s"]
    x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 224, 224, 3)), jnp.float32)
    _, vfeats = vgg.apply(vgg_vars, x)
    _, ffeats = model.apply(variables, x)
    np.testing.assert_allclose(ffeats["pool5"], vfeats["pool5"], rtol=1e-5, atol=1e-5)
    # on a 7x7 pool5 the centre pixel of the 'same'-padded 7x7 fc6 conv sees the whole map, like the Linear
    np.testing.assert_allclose(ffeats["fc6"][0, 3, 3], vfeats["fc6"][0], rtol=1e-4, atol=1e-4)


def test_skip_scores_receive_gradient(fcns):
    x, _, _, models = fcns
    model, v = models["fcn8s"]
    labels = jnp.zeros((1, 40, 40), jnp.int32)

    def loss(params):
        logits, _ = model.apply({"params": params}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0] * (labels == 0))

    g = jax.grad(loss)(v["params"])
    assert float(jnp.abs(g["score_pool3"]["kernel"]).sum()) > 0
    assert float(jnp.abs(g["score_pool4"]["kernel"]).sum()) > 0
