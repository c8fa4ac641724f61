"""The oneDNN convolutions compute XLA's convolution: forward and both gradients, float32 and bfloat16.

The reference is ``lax.conv_general_dilated`` at ``precision="highest"`` in float64 on
the same (rounded) operands; relative errors are taken against the largest output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxcnn
from jaxcnn import cpu, layers
from jaxcnn.cpu import build, onednn, ops
from jaxcnn.models.resnet import ResNet

pytestmark = pytest.mark.skipif(not build.available(), reason=f"oneDNN unavailable: {build.why_unavailable()}")
# oneDNN 3.2 has bfloat16 convolutions and products from AVX-512 on; elsewhere XLA's stay (tested below)
BF16 = pytest.param(jnp.bfloat16, id="bf16", marks=pytest.mark.skipif(
    build.available() and not build.dtype_supported(jnp.bfloat16), reason="no oneDNN bfloat16 on this CPU"))

# relative error bounds per dtype: float32 sums in another order; bfloat16 rounds operands' products' sum once
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2}


def _conv64(x, w, strides, padding, dilation, groups):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups, precision="highest")


def _f64(a):
    return jnp.asarray(np.asarray(a, np.float32), jnp.float64)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


CASES = [  # (x shape, kernel, out channels, strides, padding, dilation, groups)
    ((2, 9, 11, 4), 3, 6, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),        # 3x3 "same"
    ((3, 15, 14, 6), 5, 8, (2, 3), ((2, 1), (0, 3)), (1, 1), 2),       # grouped, uneven strides and padding
    ((2, 8, 8, 4), 1, 4, (2, 2), ((0, 0), (0, 0)), (1, 1), 1),         # ResNet downsample: unread last row/column
    ((1, 13, 13, 3), 3, 5, (1, 2), ((-1, 2), (1, 0)), (2, 1), 1),      # negative padding, dilation
    ((4, 23, 23, 3), 11, 8, (4, 4), ((2, 2), (2, 2)), (1, 1), 1),      # AlexNet conv1 geometry
    ((2, 6, 6, 8), 3, 8, (1, 1), ((1, 1), (1, 1)), (1, 1), 2),         # two-tower AlexNet: groups=2
    ((2, 10, 11, 3), 3, 4, (4, 4), ((0, 0), (1, -1)), (1, 1), 1),      # 3 unread rows, negative right padding
    ((2, 33, 31, 3), 7, 16, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),      # ResNet's stem, odd sizes
    ((1, 17, 20, 1), 4, 5, (2, 3), ((1, 2), (0, 1)), (1, 1), 1),       # one channel, even kernel, uneven strides
]
# Cases 2, 4, 6, 7 and 8 (strided, at most 4 input channels) take the input gradient by taps
# (``onednn.input_gradient_by_taps``), the rest oneDNN's backward-data primitive.


@pytest.mark.parametrize("dtype", [pytest.param(jnp.float32, id="f32"), BF16])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_gradients_match_xla(case, dtype):
    shape, k, o, strides, padding, dilation, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = jnp.asarray(rng.normal(size=shape), dtype)
    w = jnp.asarray(rng.normal(size=(k, k, shape[3] // groups, o)), dtype)
    geometry = (strides, padding, dilation, groups)
    ct = jnp.asarray(rng.normal(size=jax.eval_shape(lambda: _conv64(x, w, *geometry)).shape), dtype)
    with jax.enable_x64():
        y_ref, vjp_ref = jax.vjp(lambda x, w: _conv64(x, w, *geometry), _f64(x), _f64(w))
        dx_ref, dw_ref = vjp_ref(_f64(ct))
    f = jax.jit(lambda x, w: onednn.conv(x, w, strides, padding, dilation, groups))
    y, vjp = jax.vjp(f, x, w)
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert _rel(y, y_ref) < TOL[dtype]
    dx, dw = vjp(ct)
    assert dx.dtype == dtype and dw.dtype == dtype
    assert _rel(dx, dx_ref) < TOL[dtype]
    assert _rel(dw, dw_ref) < TOL[dtype]


def test_strided_stems_take_their_input_gradient_by_taps():
    def gradient_hlo(c, stride):
        x, w = jnp.zeros((1, 32, 32, c)), jnp.zeros((7, 7, c, 8))
        f = lambda x: onednn.conv(x, w, (stride, stride), ((3, 3), (3, 3))).sum()  # noqa: E731
        return jax.jit(jax.grad(f)).lower(x).as_text()
    assert "jaxcnn_conv_backward_data" not in gradient_hlo(3, 2)
    assert "jaxcnn_conv_backward_data" in gradient_hlo(8, 2)     # wider inputs: oneDNN's primitive
    assert "jaxcnn_conv_backward_data" in gradient_hlo(3, 1)     # stride 1: oneDNN's primitive
    geometry = lambda s, d=(1, 1), g=1: ((s, s), d, (0, 0), (0, 0), g)  # noqa: E731
    assert onednn.by_taps((1, 8, 8, 4), (3, 3, 4, 8), geometry(2))
    assert not onednn.by_taps((1, 8, 8, 4), (3, 3, 2, 8), geometry(2, g=2))
    assert not onednn.by_taps((1, 8, 8, 4), (3, 3, 4, 8), geometry(2, d=(2, 2)))


def test_flax_conv_routes_through_onednn_and_keeps_its_gradients():
    conv = layers.conv(6, 3, stride=2, padding=1, bias=True, name="c")
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 9, 10, 5)), jnp.float32)
    variables = conv.init(jax.random.key(0), x)
    loss = lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x)))
    out = {}
    for m in ("reference", "fast"):
        with cpu.mode(m):
            fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            out[m] = fn(variables, x)
            hlo = fn.lower(variables, x).as_text()
            assert ("jaxcnn_conv_backward_weights" in hlo) == (m == "fast")
    for a, b in zip(jax.tree.leaves(out["fast"]), jax.tree.leaves(out["reference"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_vmap_and_padding_strings():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(3, 2, 7, 7, 4)), jnp.float32)     # a vmapped axis in front of the batch
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    for padding in ("SAME", "VALID"):
        ref = jax.vmap(lambda x: lax.conv_general_dilated(x, w, (2, 2), padding, dimension_numbers=dn,
                                                          precision="highest"))(x)
        with cpu.mode("fast"):
            got = jax.jit(jax.vmap(lambda x: ops.conv_general_dilated(x, w, (2, 2), padding,
                                                                            dimension_numbers=dn)))(x)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not build.dtype_supported(jnp.bfloat16), reason="no oneDNN bfloat16 on this CPU")
def test_model_gradient_in_bfloat16_is_as_close_to_float32_as_xla_bfloat16():
    """A whole ResNet (one basic block per stage) in bfloat16 (oneDNN, AMX where the CPU has it) against
    XLA's bfloat16, both measured against the float32 model: oneDNN must not be the less accurate."""
    net = lambda dtype: ResNet(stage_sizes=(1, 1, 1, 1), bottleneck=False, num_classes=10, dtype=dtype)
    variables = jaxcnn.init_variables(net(jnp.float32), 32)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 32, 32, 3)), jnp.float32)
    grads = {}
    for dtype, m in ((jnp.float32, "reference"), (jnp.bfloat16, "reference"), (jnp.bfloat16, "fast")):
        model = net(dtype)
        loss = lambda v, x, model=model: jnp.mean(model.apply(v, x)[0].astype(jnp.float32) ** 2)
        with cpu.mode(m):
            grads[jnp.dtype(dtype).name, m] = jax.tree.leaves(jax.jit(jax.grad(loss))(variables, x))
    exact = grads["float32", "reference"]
    flat = lambda leaves: np.concatenate([np.asarray(a, np.float64).ravel() for a in leaves])
    err = {m: float(np.linalg.norm(flat(grads["bfloat16", m]) - flat(exact)) / np.linalg.norm(flat(exact)))
           for m in ("reference", "fast")}     # over all parameters: single tiny leaves are noise in bf16
    assert err["fast"] < 1.5 * err["reference"] + 0.01, err


def test_bad_input_is_refused_with_one_line():
    x = jnp.zeros((1, 4, 4, 3), jnp.float32)
    w = jnp.zeros((5, 5, 3, 2), jnp.float32)
    with pytest.raises(ValueError, match="convolution output is empty"):
        onednn.conv(x, w, (1, 1), ((0, 0), (0, 0)))
    assert not onednn.supports(x.astype(jnp.float16), w.astype(jnp.float16))
    assert not onednn.supports(x, w, lhs_dilation=(2, 2))
    if not build.dtype_supported(jnp.bfloat16):
        with pytest.raises(ValueError, match="no bfloat16 convolutions on this CPU"):
            onednn.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1), ((2, 2), (2, 2)))


def test_bfloat16_stays_on_xla_where_onednn_has_none(monkeypatch):
    """On a CPU where oneDNN builds no bfloat16 primitives (AVX2 only), bfloat16 convolutions and dense
    layers are XLA's, and float32 ones still oneDNN's."""
    monkeypatch.setattr(build, "dtype_supported", lambda dtype: dtype == jnp.float32)
    for dtype in (jnp.bfloat16, jnp.float32):
        conv, dense = layers.conv(6, 3, padding=1, dtype=dtype), layers.dense(4, dtype=dtype)
        x = jnp.ones((2, 8, 8, 3), dtype)
        variables = conv.init(jax.random.key(0), x), dense.init(jax.random.key(1), jnp.ones((2, 6), dtype))
        loss = lambda v, x: jnp.sum(dense.apply(v[1], conv.apply(v[0], x).mean((1, 2))) ** 2)  # noqa: E731
        with cpu.mode("fast"):
            hlo = jax.jit(jax.grad(loss)).lower(variables, x).as_text()
        calls = (hlo.count("jaxcnn_conv_"), hlo.count("jaxcnn_matmul"))
        assert (calls == (0, 0)) if dtype == jnp.bfloat16 else min(calls) > 0, (dtype, calls)


@pytest.mark.parametrize("dtype", [pytest.param(jnp.float32, id="f32"), BF16])
@pytest.mark.parametrize("shape,features", [((5, 7), 3), ((2, 3, 64), 300), ((33, 520), 96)])
def test_dense_layer_matches_a_float64_product(shape, features, dtype):
    """``layers.dense`` through oneDNN's matmul (forward, input and weight gradients) against float64."""
    rng = np.random.default_rng(3)
    dense = layers.dense(features, dtype=dtype, name="fc")
    x = jnp.asarray(rng.normal(size=shape), jnp.float32).astype(dtype).astype(jnp.float32)
    variables = dense.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v.astype(dtype).astype(jnp.float32), variables)   # exact in dtype
    g = jnp.asarray(rng.normal(size=(*shape[:-1], features)), jnp.float32).astype(dtype)
    with cpu.mode("fast"):
        y, vjp = jax.vjp(lambda v, x: dense.apply(v, x), variables, x)
        (dv, dx) = vjp(g)
        jaxpr = str(jax.make_jaxpr(lambda v, x: jax.vjp(dense.apply, v, x)[1](g))(variables, x))
    assert jaxpr.count("jaxcnn_matmul") == (3 if dtype == jnp.bfloat16 else 2)   # f32 weight gradient: XLA's dot
    with jax.enable_x64():
        w, b = (_f64(variables["params"][k]) for k in ("kernel", "bias"))
        x64, g64 = _f64(x), _f64(g)
        ref_y = jnp.einsum("...k,kn->...n", x64, w) + b
        ref_dx = jnp.einsum("...n,kn->...k", g64, w)
        ref_dw = jnp.einsum("...k,...n->kn", x64, g64)
    tol = TOL[dtype] * (1 if dtype == jnp.bfloat16 else 5)
    assert y.dtype == dtype
    for got, ref in ((y, ref_y), (dx, ref_dx), (dv["params"]["kernel"], ref_dw)):
        assert _rel(got, ref) < tol
