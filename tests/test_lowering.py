"""Every alternative lowering computes the reference function: forward and gradients, several shapes and dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import cpu, layers
from jaxcnn.cpu import build, ops
from jaxcnn.models.resnet import ResNet


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
        monkeypatch.setattr(ops, "_native_pool", lambda *a: False)
    elif not build.available():
        pytest.skip(f"the C++ pool is built with the oneDNN shim: {build.why_unavailable()}")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), dtype)
    x = jnp.maximum(x, 0)          # post-ReLU zeros: windows with ties, where the first maximum must win
    x = jnp.round(x * 2) / 2       # more ties among positive values
    g = jnp.asarray(rng.normal(size=jax.eval_shape(lambda x: _pool(x, k, s, p, ceil), x).shape), dtype)
    outs = {}
    for m in ("reference", "fast"):
        with cpu.mode(m):
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
    monkeypatch.setattr(build, "available", lambda: False)   # the GEMM path is the fallback without oneDNN
    rng = np.random.default_rng(1)
    conv = layers.conv(5, 1, stride=stride, bias=True, name="c")
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    variables = conv.init(jax.random.key(0), x)
    f = lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x)))
    res = {}
    for m in ("reference", "fast"):
        with cpu.mode(m):
            res[m] = (jax.jit(conv.apply)(variables, x), jax.jit(jax.grad(f, argnums=(0, 1)))(variables, x))
    np.testing.assert_allclose(res["fast"][0], res["reference"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(res["fast"][1]), jax.tree.leaves(res["reference"][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fast_path_is_used_and_a_model_gradient_is_unchanged():
    # ResNet-18's layers with one basic block per stage (the same net as test_onednn's bfloat16 check)
    model = ResNet(stage_sizes=(1, 1, 1, 1), bottleneck=False, num_classes=10)
    variables = jaxcnn.init_variables(model, 32)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)), jnp.float32)
    loss = lambda v, x: jnp.sum(model.apply(v, x)[0] ** 2)
    grads, hlo = {}, {}
    for m in ("reference", "fast"):
        with cpu.mode(m):
            fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
            grads[m] = fn(variables, x)
            hlo[m] = fn.lower(variables, x).as_text()
    assert "select_and_scatter" in hlo["reference"] and "select_and_scatter" not in hlo["fast"]
    for a, b in zip(jax.tree.leaves(grads["fast"]), jax.tree.leaves(grads["reference"])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def test_modes():
    with cpu.mode("reference"):
        assert not cpu.fast_paths()
    with cpu.mode("fast"):
        assert cpu.fast_paths()
    assert cpu.get_mode() == "auto"
    with pytest.raises(ValueError, match="unknown lowering mode 'gpu'; valid: auto, reference, fast"):
        cpu.set_mode("gpu")


# ---------------------------------------------------------------- batch norm (training mode)
def _bn64(x, scale, bias, eps):
    """Training-mode batch norm in float64, the two-pass variance: the reference for both kernels."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) / jnp.sqrt(var + eps) * scale + bias, mean, var


@pytest.mark.parametrize("shape", [
    (5, 3),               # rank 2, serial
    (2, 5, 7, 33),        # odd channel count, serial
    (4, 37, 29, 64),      # parallel over the team, rows not a multiple of the 64-row blocks
    (3, 11, 13, 2048),    # wide channels (ResNet-50's last stage)
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_batch_norm_kernel_matches_float64_in_all_outputs_and_gradients(shape, dtype):
    if not build.available():
        pytest.skip(f"the C++ batch norm is built with the oneDNN shim: {build.why_unavailable()}")
    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = jnp.asarray(rng.normal(3.0, 2.0, size=shape), dtype)       # a mean far from 0: E[x^2] - E[x]^2 cancels
    scale, bias = (jnp.asarray(rng.normal(size=c), jnp.float32) for _ in range(2))
    cts = (jnp.asarray(rng.normal(size=shape), jnp.float32), jnp.asarray(rng.normal(size=c), jnp.float32),
           jnp.asarray(rng.normal(size=c), jnp.float32))       # cotangents on y, mean and variance
    outs, vjp = jax.vjp(lambda x, s, b: ops._batch_norm_native(x, s, b, 1e-5), x, scale, bias)
    grads = vjp(cts)
    with jax.enable_x64():
        f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
        ref_outs, ref_vjp = jax.vjp(lambda x, s, b: _bn64(x, s, b, 1e-5), f64(x), f64(scale), f64(bias))
        ref_grads = ref_vjp(tuple(f64(t) for t in cts))
        ref_outs, ref_grads = ([np.asarray(r) for r in rs] for rs in (ref_outs, ref_grads))
    assert grads[0].dtype == dtype and all(o.dtype == jnp.float32 for o in outs)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))
    for name, a, b in zip(("y", "mean", "var"), outs, ref_outs):
        assert rel(a, b) < 2e-6, name                               # x is exact in either dtype
    tol = 2e-6 if dtype == jnp.float32 else 1e-2                   # dx is rounded to bfloat16
    for name, a, b in zip(("dx", "dscale", "dbias"), grads, ref_grads):
        assert rel(a, b) < (tol if name == "dx" else 2e-5), name


def test_batch_norm_layer_equals_flax_with_its_running_averages():
    import flax.linen as nn
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.0, 3.0, size=(4, 9, 9, 16)), jnp.float32)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ours, theirs = layers.batch_norm(True), nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = theirs.init(jax.random.key(0), x)
    assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(variables)
    variables = jax.tree.map(lambda v: v + jnp.asarray(rng.normal(size=v.shape), jnp.float32) * 0.1, variables)

    def loss(module, params, x):
        y, upd = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y * g), upd

    results = {}
    for label, module in (("ours", ours), ("flax", theirs)):
        with cpu.mode("fast"):
            (_, upd), grads = jax.value_and_grad(functools.partial(loss, module), argnums=(0, 1), has_aux=True)(
                variables["params"], x)
            jaxpr = str(jax.make_jaxpr(functools.partial(loss, module))(variables["params"], x))
        results[label] = (upd, grads)
        assert ("jaxcnn_batch_norm" in jaxpr) == (label == "ours" and build.available())
    for a, b in zip(jax.tree.leaves(results["ours"]), jax.tree.leaves(results["flax"])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kwargs", [dict(kernel=3, padding=1), dict(kernel=(3, 1), stride=2, padding=(1, 0)),
                                    dict(kernel=3, groups=2, dilation=2, padding=2), dict(kernel=1, bias=False)])
def test_conv_layer_equals_flax_in_init_output_and_gradients(kwargs):
    import flax.linen as nn
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)), jnp.float32)
    ours = layers.conv(6, **kwargs)
    assert type(ours) is layers.Conv
    theirs = nn.Conv(**{f: getattr(ours, f) for f in ("features", "kernel_size", "strides", "padding",
                                                      "kernel_dilation", "feature_group_count", "use_bias")})
    variables = theirs.init(jax.random.key(3), x)
    for a, b in zip(jax.tree.leaves(ours.init(jax.random.key(3), x)), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)                 # the same variables, drawn in the same order
    g = jnp.asarray(rng.normal(size=theirs.apply(variables, x).shape), jnp.float32)
    for mode in ("fast", "reference"):
        with cpu.mode(mode):
            np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-5, atol=1e-5)
            got = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * g), argnums=(0, 1))(variables, x)
        want = jax.grad(lambda v, x: jnp.sum(theirs.apply(v, x) * g), argnums=(0, 1))(variables, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(8, 32, 32, 16), (3, 7, 5, 5)])
def test_bfloat16_bias_gradient_is_the_float32_sum(shape):
    rng = np.random.default_rng(2)
    g = jnp.asarray(rng.normal(1.0, 1.0, size=shape), jnp.bfloat16)   # a mean of 1: bf16 partial sums would drift
    y = jnp.zeros(shape, jnp.bfloat16)
    b = jnp.zeros(shape[-1:], jnp.float32)
    want = np.asarray(g, np.float64).reshape(-1, shape[-1]).sum(0)
    with cpu.mode("fast"):
        got = jax.jit(jax.grad(lambda b: jnp.vdot(ops.bias_add(y, b).astype(jnp.float32),
                                                  g.astype(jnp.float32))))(b)
        out = ops.bias_add(y, b + 1.5)
    assert got.dtype == jnp.float32 and out.dtype == jnp.bfloat16 and np.all(np.asarray(out, np.float32) == 1.5)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cond_tree_picks_the_same_tree_in_both_lowerings():
    a = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.int32(3), "b": (jnp.ones(4, jnp.bfloat16),)}
    b = jax.tree_util.tree_map(lambda x: -x - 1, a)
    for mode in ("fast", "reference"):
        with cpu.mode(mode):
            pick = jax.jit(lambda p, a, b: cpu.cond_tree(p, lambda: a, lambda: b))
            hlo = pick.lower(True, a, b).as_text()
            assert ("stablehlo.case" in hlo or "stablehlo.if" in hlo) == (mode == "fast"), mode
            for p, want in ((True, a), (False, b)):
                got = pick(p, a, b)
                assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
                for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                    assert x.dtype == y.dtype
                    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("shape", [(1, 300, 7), (2, 64, 130)])      # long pixels; more channels than pixels
def test_gram_by_onednn_equals_float64_with_its_gradient(shape):
    rng = np.random.default_rng(3)
    f = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((shape[0], shape[2], shape[2])), jnp.float32)   # not symmetric
    f64, w64 = np.asarray(f, np.float64), np.asarray(w, np.float64)
    want = np.einsum("bpc,bpd->bcd", f64, f64)
    want_grad = np.einsum("bpc,bcd->bpd", f64, w64 + w64.transpose(0, 2, 1))    # d sum(w * F^T F) / dF
    for mode in ("fast", "reference"):
        with cpu.mode(mode):
            fn = jax.jit(jax.value_and_grad(lambda f: jnp.sum(w * ops.gram(f))))
            assert ("jaxcnn_matmul" in fn.lower(f).as_text()) == (mode == "fast")
            got, grad = fn(f)
            np.testing.assert_allclose(ops.gram(f), want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
            np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=2e-5 * np.abs(want_grad).max())
            np.testing.assert_allclose(got, np.sum(w64 * want), rtol=1e-5)
