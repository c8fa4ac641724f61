"""Every alternative lowering computes the reference function: forward and gradients, several shapes and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import layers, lowering, onednn


def _pool(x, k, s, p, ceil):
    return layers.max_pool(x, k, s, p, ceil_mode=ceil)


@pytest.mark.parametrize("shape,k,s,p,ceil", [
    ((2, 9, 9, 3), 3, 2, 0, False),      # AlexNet-style overlapping
    ((2, 8, 11, 4), 3, 2, 1, False),     # ResNet stem
    ((1, 7, 7, 5), 3, 2, 0, True),       # GoogLeNet ceil mode
    ((2, 6, 6, 3), 3, 1, 1, False),      # stride 1 (inception branch)
    ((2, 8, 8, 3), 2, 2, 0, False),      # VGG
    ((2, 9, 7, 3), 2, 2, 0, False),      # tiling windows with a dropped row and column
    ((1, 5, 5, 2), 2, 2, 0, True),       # tiling windows, ceil mode: the last window is cut
    ((2, 7, 7, 300), 3, 2, 1, True),     # channels past the C++ pool's 256-wide blocks
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("impl", ["native", "slices"])
def test_max_pool_fast_vjp_equals_select_and_scatter(shape, k, s, p, ceil, dtype, impl, monkeypatch):
    if impl == "slices":
        monkeypatch.setattr(lowering, "_native_pool", lambda *a: False)
    elif not onednn.available():
        pytest.skip(f"the C++ pool is built with the oneDNN shim: {onednn.why_unavailable()}")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), dtype)
    x = jnp.maximum(x, 0)          # post-ReLU zeros: windows with ties, where the first maximum must win
    x = jnp.round(x * 2) / 2       # more ties among positive values
    g = jnp.asarray(rng.normal(size=jax.eval_shape(lambda x: _pool(x, k, s, p, ceil), x).shape), dtype)
    outs = {}
    for m in ("reference", "fast"):
        with lowering.mode(m):
            y, vjp = jax.vjp(lambda x: _pool(x, k, s, p, ceil), x)
            outs[m] = (y, vjp(g)[0])
            jaxpr = str(jax.make_jaxpr(jax.vjp(lambda x: _pool(x, k, s, p, ceil), x)[1])(g))
            assert ("jaxcnn_max_pool_backward" in jaxpr) == (m == "fast" and impl == "native")
    np.testing.assert_array_equal(outs["fast"][0], outs["reference"][0])
    fast, ref = (np.asarray(outs[m][1], np.float32) for m in ("fast", "reference"))
    np.testing.assert_array_equal(fast != 0, ref != 0)        # the same switches route the gradient
    # where windows overlap, several contributions add up in another order
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 7, 7, 8), (1, 10, 6, 3)])
def test_pointwise_conv_as_gemm_equals_the_convolution(stride, shape, monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)   # the GEMM path is the fallback without oneDNN
    rng = np.random.default_rng(1)
    conv = layers.conv(5, 1, stride=stride, bias=True, name="c")
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    variables = conv.init(jax.random.key(0), x)
    f = lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x)))
    res = {}
    for m in ("reference", "fast"):
        with lowering.mode(m):
            res[m] = (jax.jit(conv.apply)(variables, x), jax.jit(jax.grad(f, argnums=(0, 1)))(variables, x))
    np.testing.assert_allclose(res["fast"][0], res["reference"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(res["fast"][1]), jax.tree.leaves(res["reference"][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fast_path_is_used_and_a_model_gradient_is_unchanged():
    model = jaxcnn.create_model("resnet18", num_classes=10)
    variables = jaxcnn.init_variables(model, 64)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 64, 64, 3)), jnp.float32)
    loss = lambda v, x: jnp.sum(model.apply(v, x)[0] ** 2)
    grads, hlo = {}, {}
    for m in ("reference", "fast"):
        with lowering.mode(m):
            fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
            grads[m] = fn(variables, x)
            hlo[m] = fn.lower(variables, x).as_text()
    assert "select_and_scatter" in hlo["reference"] and "select_and_scatter" not in hlo["fast"]
    for a, b in zip(jax.tree.leaves(grads["fast"]), jax.tree.leaves(grads["reference"])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def test_modes():
    with lowering.mode("reference"):
        assert not lowering.fast_paths()
    with lowering.mode("fast"):
        assert lowering.fast_paths()
    assert lowering.get_mode() == "auto"
    with pytest.raises(ValueError, match="unknown lowering mode 'gpu'; valid: auto, reference, fast"):
        lowering.set_mode("gpu")
