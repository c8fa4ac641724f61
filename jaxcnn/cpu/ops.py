"""The ops where XLA:CPU's own lowering is slow, each with its fast path chosen by the policy.

``jaxcnn.layers`` calls these (and nothing else in the package does): ``conv_general_dilated``
(oneDNN, Winograd for float32 3x3/5x5 stride-1 layers, 1x1 convolutions as GEMMs),
``dot_general`` (oneDNN's matmul for dense layers), ``max_pool`` (the C++ pool, or a VJP from
strided slices), ``batch_norm`` (C++ training-mode batch norm), ``bias_add`` (a float32 bias
gradient for bfloat16 layers) and ``gram`` (oneDNN's product for style losses). Every fast path
computes the function of XLA's own op, forward and gradient (``tests/test_lowering.py``,
``tests/test_onednn.py``, ``tests/test_winograd.py``), so the choice is about speed alone; each
one's reason and benchmark are in ``jaxcnn/cpu/README.md``. Off the CPU (``policy.fast_paths()``
false) every op is XLA's own. Reverse mode only: ``jax.jvp`` needs ``cpu.mode("reference")``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.cpu import build, onednn, policy, winograd
from jaxcnn.cpu.policy import fast_paths, onednn_convs

# ---------------------------------------------------------------- max pool
def _reduce_max(x, window, strides, pads):
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_sliced(x, window, strides, pads):
    return _reduce_max(x, window, strides, pads)


def _max_pool_fwd(x, window, strides, pads):
    y = _reduce_max(x, window, strides, pads)
    return y, (x, y)


def _max_pool_bwd(window, strides, pads, res, g):
    x, y = res
    (_, kh, kw, _), (_, sh, sw, _) = window, strides
    xp = jnp.pad(x, pads, constant_values=-jnp.inf)
    n, hp, wp, c = xp.shape
    oh, ow = y.shape[1], y.shape[2]
    taken = jnp.zeros(y.shape, bool)
    gx = jnp.zeros(xp.shape, g.dtype)
    zero = jnp.array(0, g.dtype)
    for i in range(kh):
        for j in range(kw):
            hi, wj = i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1
            xs = lax.slice(xp, (0, i, j, 0), (n, hi, wj, c), (1, sh, sw, 1))
            hit = (xs == y) & ~taken
            taken = taken | hit
            gx = gx + lax.pad(jnp.where(hit, g, zero), zero,
                              ((0, 0, 0), (i, hp - hi, sh - 1), (j, wp - wj, sw - 1), (0, 0, 0)))
    (pt, _), (pl, _) = pads[1], pads[2]
    return (gx[:, pt:pt + x.shape[1], pl:pl + x.shape[2]],)


_max_pool_sliced.defvjp(_max_pool_fwd, _max_pool_bwd)


def _pool_attrs(window, strides, pads):
    return dict(window=np.asarray(window[1:3], np.int64), strides=np.asarray(strides[1:3], np.int64),
                pad_lo=np.asarray([pads[1][0], pads[2][0]], np.int64))


def _pool_out(x, window, strides, pads):
    return jax.ShapeDtypeStruct(jax.eval_shape(lambda x: _reduce_max(x, window, strides, pads), x).shape, x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_native(x, window, strides, pads, x_type):
    out = _pool_out(x, window, strides, pads)
    return jax.ffi.ffi_call("jaxcnn_max_pool_forward", out, vmap_method="sequential")(
        x, **_pool_attrs(window, strides, pads))


def _max_pool_native_fwd(x, window, strides, pads, x_type):
    out = _pool_out(x, window, strides, pads)
    y, where = jax.ffi.ffi_call("jaxcnn_max_pool_forward_train", (out, jax.ShapeDtypeStruct(out.shape, jnp.uint8)),
                                vmap_method="sequential")(x, **_pool_attrs(window, strides, pads))
    return y, where      # one byte per output: the window cell that held the maximum


def _max_pool_native_bwd(window, strides, pads, x_type, where, g):
    return (jax.ffi.ffi_call("jaxcnn_max_pool_backward", x_type, vmap_method="sequential")(
        g.astype(x_type.dtype), where, **_pool_attrs(window, strides, pads)),)


_max_pool_native.defvjp(_max_pool_native_fwd, _max_pool_native_bwd)


def _native_pool(x, window) -> bool:
    """The C++ pool (``csrc/max_pool.cc``, built with the oneDNN shim): where the oneDNN convolutions run."""
    return (onednn_convs() and policy.enabled("max_pool") and x.ndim == 4
            and x.dtype in (jnp.float32, jnp.bfloat16) and window[1] * window[2] <= 255 and build.available())


def max_pool(x, window: Sequence[int], strides: Sequence[int], pads: Sequence[tuple[int, int]]):
    """NHWC max pool; ``window``/``strides`` are 4-tuples (1, kh, kw, 1), ``pads`` 4 (lo, hi) pairs."""
    window, strides, pads = tuple(window), tuple(strides), tuple(tuple(p) for p in pads)
    if fast_paths() and _native_pool(x, window):
        return _max_pool_native(x, window, strides, pads, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if fast_paths():
        return _max_pool_sliced(x, window, strides, pads)
    return _reduce_max(x, window, strides, pads)


# ---------------------------------------------------------------- batch norm (training mode)
def _batch_norm_reference(x, scale, bias, eps):
    """flax's training-mode batch norm (fast variance), in float32."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(0.0, jnp.mean(lax.square(xf), axes) - lax.square(mean))
    mul = lax.rsqrt(var + eps) * scale
    return (xf - mean) * mul + bias, mean, var


def _bn_call(name, outs, *args, eps):
    return jax.ffi.ffi_call(f"jaxcnn_batch_norm_{name}", outs, vmap_method="sequential")(*args, eps=np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_native(x, scale, bias, eps):
    c = jax.ShapeDtypeStruct((x.shape[-1],), jnp.float32)
    return _bn_call("forward", (jax.ShapeDtypeStruct(x.shape, jnp.float32), c, c), x, scale, bias, eps=eps)


def _batch_norm_native_fwd(x, scale, bias, eps):
    y, mean, var = _batch_norm_native(x, scale, bias, eps)
    return (y, mean, var), (x, scale, mean, var)


def _batch_norm_native_bwd(eps, res, cts):
    x, scale, mean, var = res
    dy, dmean, dvar = cts
    c = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
    dx, dscale, dbias = _bn_call("backward", (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c), x,
                                 dy.astype(jnp.float32), scale, mean, var, dmean.astype(jnp.float32),
                                 dvar.astype(jnp.float32), eps=eps)
    return dx, dscale, dbias


_batch_norm_native.defvjp(_batch_norm_native_fwd, _batch_norm_native_bwd)


def native_batch_norm(x) -> bool:
    """Whether ``batch_norm`` runs the C++ kernel for ``x`` (where the oneDNN convolutions run)."""
    return (onednn_convs() and policy.enabled("batch_norm") and x.ndim >= 2
            and x.dtype in (jnp.float32, jnp.bfloat16) and x.size > 0 and build.available())


def batch_norm(x, scale, bias, eps: float):
    """Training-mode batch norm over all axes but the last: ``(y, batch mean, batch variance)``, all float32.

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance, as flax's
    ``BatchNorm`` computes it; the C++ one (``csrc/batch_norm.cc``) where the oneDNN convolutions
    run, else that formula in XLA. Differentiable in all three outputs.
    """
    if native_batch_norm(x) and scale.dtype == jnp.float32 and bias.dtype == jnp.float32:
        return _batch_norm_native(x, scale, bias, float(eps))
    return _batch_norm_reference(x, scale.astype(jnp.float32), bias.astype(jnp.float32), eps)


# ---------------------------------------------------------------- bias
@jax.custom_vjp
def _bias_add_f32_grad(y, b):
    return y + b.astype(y.dtype)


def _bias_add_fwd(y, b):
    return _bias_add_f32_grad(y, b), b


def _bias_add_bwd(b, g):
    return g, jnp.sum(g, tuple(range(g.ndim - 1)), dtype=jnp.float32).astype(b.dtype)


_bias_add_f32_grad.defvjp(_bias_add_fwd, _bias_add_bwd)


def bias_add(y, b):
    """``y + b`` over the last axis, ``b`` cast to ``y``'s dtype first (as flax's layers add it).

    On the CPU fast path a bfloat16 ``y``'s bias gradient is summed in float32 and lands in ``b``'s
    dtype. Differentiating the plain sum gives a bfloat16 reduction, which XLA:CPU converts to
    float32 in a copy of the whole gradient and reduces through a tree of reduce-windows, an order
    of magnitude slower than a float32 sum (``python -m benchmarks.cpu.bias_grad``); the float32 sum
    is also exact to float32 rounding instead of bfloat16's.
    """
    if fast_paths() and policy.enabled("bias_add") and y.dtype == jnp.bfloat16:
        return _bias_add_f32_grad(y, b)
    return y + b.astype(y.dtype)


# ---------------------------------------------------------------- convolution
_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))   # what flax passes for NHWC/HWIO


def _is_pointwise(kernel, strides, padding, lhs_dilation, rhs_dilation, feature_group_count) -> bool:
    pads_zero = not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding)
    return (kernel.shape[0] == 1 and kernel.shape[1] == 1 and feature_group_count == 1 and pads_zero
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1))))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, *, transforms=None,
                         **kwargs):
    """``lax.conv_general_dilated`` for NHWC/HWIO: oneDNN on the CPU fast path (``onednn_convs``), else
    1x1 convolutions as a GEMM on the fast path, else XLA's convolution. ``transforms``: the kernel's
    Winograd transforms made beforehand (forward, backward), if any (``winograd.with_transforms``)."""
    nhwc = dimension_numbers in (_NHWC, ("NHWC", "HWIO", "NHWC"))
    if (onednn_convs() and nhwc and kwargs.get("preferred_element_type") in (None, lhs.dtype)
            and onednn.supports(lhs, rhs, lhs_dilation, feature_group_count) and build.available()):
        rhs_dilation = tuple(rhs_dilation or (1, 1))
        if isinstance(padding, str):
            extent = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], rhs_dilation)]
            padding = lax.padtype_to_pads(lhs.shape[1:3], extent, window_strides, padding)
        if transforms is not None and winograd.eligible_transformed(lhs, rhs, window_strides, padding, rhs_dilation,
                                                                    feature_group_count):
            return winograd.conv_transformed(lhs, rhs, *transforms, padding)
        if winograd.eligible(lhs, rhs, window_strides, padding, rhs_dilation, feature_group_count):
            return winograd.conv(lhs, rhs, padding)
        return onednn.conv(lhs, rhs, window_strides, padding, rhs_dilation, feature_group_count)
    if fast_paths() and nhwc and _is_pointwise(rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                                feature_group_count):
        sh, sw = window_strides
        x = lhs[:, ::sh, ::sw] if (sh, sw) != (1, 1) else lhs
        return lax.dot_general(x, rhs[0, 0], (((3,), (0,)), ((), ())), precision=precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


# ---------------------------------------------------------------- dense layers
def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """``lax.dot_general`` for dense layers: ``x @ W`` contracting x's last axis with W's first goes
    through oneDNN (``onednn.matmul``) where the oneDNN convolutions do; anything else is XLA's dot."""
    (lc, rc), (lb, rb) = dimension_numbers
    if (onednn_convs() and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb
            and rhs.ndim == 2 and lhs.ndim >= 2 and lhs.dtype == rhs.dtype
            and preferred_element_type in (None, lhs.dtype) and min(lhs.shape) > 0 and min(rhs.shape) > 0
            and build.available() and build.dtype_supported(lhs.dtype)):
        y = onednn.matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
        return y.reshape(*lhs.shape[:-1], rhs.shape[1])
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)


# ---------------------------------------------------------------- Gram matrices (style losses)
def gram(flat: jax.Array) -> jax.Array:
    """Per image ``F^T F`` of float32 features ``flat`` (B, P, C) -> (B, C, C): oneDNN's product where
    its convolutions are used (``onednn.gram``), else XLA's dot."""
    if onednn_convs() and policy.enabled("gram") and flat.dtype == jnp.float32 and min(flat.shape) > 0 \
            and build.available():
        return jnp.stack([onednn.gram(flat[b]) for b in range(flat.shape[0])])
    return jnp.einsum("bpc,bpd->bcd", flat, flat)
