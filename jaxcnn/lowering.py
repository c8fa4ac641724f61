"""Backend-selected lowerings of the few ops where XLA:CPU's default path is slow. The one place for them.

Model code calls ``layers.conv`` and ``layers.max_pool``; those call here.
Every alternative computes the same function as the reference lowering
(forward and gradient; ``tests/test_lowering.py`` checks both at several
shapes), so the choice is purely about speed. ``mode``:

  ``"auto"`` (default): the fast paths on the CPU backend, XLA's own ops elsewhere
    (GPU/TPU paths are untouched);
  ``"reference"``: XLA's own ops everywhere;
  ``"fast"``: the fast paths everywhere (for testing them off-CPU).

The alternatives (each with a before/after figure in ``benchmarks/RESULTS.md``):

* max pool: XLA differentiates ``reduce_window(max)`` into ``select_and_scatter``,
  which XLA:CPU runs 5-8x slower than PyTorch. Where the oneDNN shim is built, a C++
  pool (``csrc/max_pool.cc``) records in its forward which window cell held each
  maximum (one byte per output, the residual) and its backward adds each output
  gradient to that cell: 2-4x faster than the slices below on overlapping windows
  (``benchmarks/pool_layers.py``). Otherwise the VJP is built from k*k
  strided slices: for each window offset, the gradient goes where the input
  equals the pooled maximum and no earlier offset took it (the first maximum
  in row-major window order, exactly ``select_and_scatter``'s choice with
  ties), placed back with an interior-padded ``lax.pad``. Reverse mode only:
  ``jax.jvp`` through a max pool needs ``mode("reference")``.
* convolutions (NHWC/HWIO, float32 or bfloat16, any stride, padding, dilation
  and groups): oneDNN through XLA FFI custom calls (``jaxcnn.onednn``), forward,
  input gradient and weight gradient. XLA:CPU runs weight gradients at 30-70
  GFLOP/s and bfloat16 convolutions in float32; oneDNN reaches 400-470 GFLOP/s in
  float32 and uses AMX for bfloat16 (ResNet-50 train step alone 3.7 -> 7.5 img/s
  f32, 8.7 with ``host_memory``'s kept heap, 13.1 bf16). Only where the process
  sees one device (see ``onednn_convs``). Reverse mode only, like the max pool.
* float32 3x3 and 5x5 stride-1 convolutions with enough channels and output tiles
  (``winograd.eligible``): Winograd's F(4x4, 3x3) and F(2x2, 5x5) in C++ (``jaxcnn.winograd``,
  ``csrc/winograd.cc``), 36 instead of 144 (3x3) or 100 (5x5) multiplications per tile and channel
  pair, for the forward and the input gradient (the weight gradient stays oneDNN's). VGG-16
  inference 5.86 -> 11.10 img/s, train step 1.71 -> 2.30 (``benchmarks/winograd.py --models``). The result differs
  from the direct convolution by rounding only: about 1e-5 of the output's magnitude in float32
  (the direct one: 1e-6), stated and tested against float64 in ``tests/test_winograd.py``.
  ``JAXCNN_WINOGRAD=0`` or ``winograd.disabled()`` keeps the direct convolutions.
* dense layers (``x @ W``): oneDNN's matmul where its convolutions are used, for the
  forward, the input gradient and the bfloat16 weight gradient (XLA:CPU runs a dense
  layer's backward at 60-100 GFLOP/s and bfloat16 dots in float32; its float32 weight
  gradient, with the batch as inner dimension, is the one it does well).
* Gram matrices ``F^T F`` of style losses (``gram``): oneDNN's matmul where its convolutions are
  used. XLA:CPU splits a dot over its output only, and a C x C Gram matrix of C <= 128 is one
  block: VGG-19 conv1_1's at 224 px (50176 x 64) ran on one thread, 11.5 ms against oneDNN's 4.3,
  with its gradient 31.6 against 8.4 (``benchmarks/gram.py``); the float32 style step 1.21x-1.23x
  faster at 224 px, 1.05x-1.09x at 128.
* batch norm in training mode (statistics over every axis but the last): where the
  oneDNN convolutions run, a C++ forward (``csrc/batch_norm.cc``: batch mean and
  variance, summed in float over 64-row blocks and in double across them, then the
  normalization) and backward (two passes: the per-channel sums, then the input
  gradient), instead of the six or so XLA fusions per layer flax's batch norm compiles
  to (ResNet-50 train step f32: compile 38.8 -> 23.3 s, 5.80 -> 6.43 img/s,
  ``benchmarks/batch_norm_layers.py --step resnet50``).
  ``layers.BatchNorm`` calls it; under ``pmap`` (an ``axis_name``) flax's stays.
* the bias gradient of a bfloat16 convolution (``bias_add``, called by ``layers.Conv``):
  summed in float32. Differentiating ``y + b`` gives a bfloat16 reduction, which XLA:CPU
  runs 20x slower and which drifts by tens of percent over a large map (VGG-16 bf16 train
  step 4.07 -> 6.26 img/s, ``benchmarks/bias_grad.py``). The one alternative here that
  changes the numbers: it is the float32 sum, exact to float32 rounding (tested against
  float64), where the reference is bfloat16 arithmetic.
* 1x1 convolutions (stride s, no padding, no groups) where oneDNN is not used: a
  strided slice and a ``dot_general`` over channels, which XLA:CPU runs as a
  GEMM near the matmul peak, instead of its convolution path.
* loops of model evaluations: XLA:CPU runs the body of a while loop about 4x
  slower than the same ops at top level (VGG-19 input-gradient step at 128 px:
  400 ms inside ``lax.fori_loop``, 94 ms unrolled; no XLA flag changes it). So
  on the CPU the input-optimisation loop runs one compiled step per call from
  Python (the state stays on the device), and short traced loops (the PGD of
  adversarial training) are unrolled; elsewhere they stay one ``lax.scan``.
* choosing between two pytrees on one traced predicate (``cond_tree``; the train step's NaN guard):
  one ``lax.cond`` on the CPU. ``where(pred, a, b)`` per leaf lets XLA fuse the predicate's
  computation into every leaf's select; for the guard, a chain of one add per parameter array,
  ResNet-50's step compiled to 155k lines of HLO and in 17.4 s instead of 14k and 5.5 s
  (``benchmarks/nan_guard.py``). Elsewhere the selects stay: XLA:GPU reads a conditional's
  predicate on the host, a synchronisation per step.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import onednn, winograd

MODES = ("auto", "reference", "fast")
_mode = "auto"


def get_mode() -> str:
    return _mode


def set_mode(mode: str) -> None:
    """Selects the lowering policy (takes effect for functions traced afterwards)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"unknown lowering mode {mode!r}; valid: {', '.join(MODES)}")
    _mode = mode


@contextlib.contextmanager
def mode(m: str):
    """``with lowering.mode("reference"): ...`` traces with that policy, then restores the previous one."""
    previous = _mode
    set_mode(m)
    try:
        yield
    finally:
        set_mode(previous)


def fast_paths() -> bool:
    return _mode == "fast" or (_mode == "auto" and jax.default_backend() == "cpu")


# ---------------------------------------------------------------- loops
MAX_UNROLL = 16


def steps_per_call(steps: int) -> int:
    """How many optimisation steps one compiled call should run: all of them, or one on the CPU."""
    return 1 if fast_paths() else steps


def fori_loop(n: int, body, init):
    """``lax.fori_loop(0, n, body, init)``, unrolled on the CPU fast path when ``n <= MAX_UNROLL``."""
    if fast_paths() and n <= MAX_UNROLL:
        x = init
        for i in range(n):
            x = body(i, x)
        return x
    return lax.fori_loop(0, n, body, init)


def cond_tree(pred, on_true, on_false):
    """``on_true()`` if ``pred`` else ``on_false()`` (two no-argument functions returning pytrees of the
    same structure): one ``lax.cond`` on the CPU fast path, ``where`` per leaf elsewhere."""
    if fast_paths():
        return lax.cond(pred, on_true, on_false)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true(), on_false())


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
    return (onednn_convs() and x.ndim == 4 and x.dtype in (jnp.float32, jnp.bfloat16)
            and window[1] * window[2] <= 255 and onednn.available())


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
    return (onednn_convs() and x.ndim >= 2 and x.dtype in (jnp.float32, jnp.bfloat16) and x.size > 0
            and onednn.available())


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
    float32 in a copy of the whole gradient and reduces through a tree of reduce-windows: VGG-16's
    conv1_2 bias gradient at batch 8 took 103 ms that way, 4.4 ms summed in float32
    (``benchmarks/bias_grad.py``), and is exact to float32 rounding instead of bfloat16's.
    """
    if fast_paths() and y.dtype == jnp.bfloat16:
        return _bias_add_f32_grad(y, b)
    return y + b.astype(y.dtype)


# ---------------------------------------------------------------- convolution
_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))   # what flax passes for NHWC/HWIO


def _is_pointwise(kernel, strides, padding, lhs_dilation, rhs_dilation, feature_group_count) -> bool:
    pads_zero = not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding)
    return (kernel.shape[0] == 1 and kernel.shape[1] == 1 and feature_group_count == 1 and pads_zero
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1))))


def onednn_convs() -> bool:
    """oneDNN convolutions: on the CPU fast path when the process sees one device.

    XLA's SPMD partitioner cannot split a custom call it knows nothing about, so in a
    computation sharded over several CPU devices (simulated, or one per process) it would
    run every oneDNN convolution on the whole batch on each device. There XLA's own
    convolutions stay; ``mode("fast")`` forces oneDNN (unsharded computations, tests).
    """
    return _mode == "fast" or (fast_paths() and jax.device_count() == 1)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, *, transforms=None,
                         **kwargs):
    """``lax.conv_general_dilated`` for NHWC/HWIO: oneDNN on the CPU fast path (``onednn_convs``), else
    1x1 convolutions as a GEMM on the fast path, else XLA's convolution. ``transforms``: the kernel's
    Winograd transforms made beforehand (forward, backward), if any (``winograd.with_transforms``)."""
    nhwc = dimension_numbers in (_NHWC, ("NHWC", "HWIO", "NHWC"))
    if (onednn_convs() and nhwc and kwargs.get("preferred_element_type") in (None, lhs.dtype)
            and onednn.supports(lhs, rhs, lhs_dilation, feature_group_count) and onednn.available()):
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
            and onednn.available() and onednn.dtype_supported(lhs.dtype)):
        y = onednn.matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
        return y.reshape(*lhs.shape[:-1], rhs.shape[1])
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)


# ---------------------------------------------------------------- Gram matrices (style losses)
def gram(flat: jax.Array) -> jax.Array:
    """Per image ``F^T F`` of float32 features ``flat`` (B, P, C) -> (B, C, C): oneDNN's product where
    its convolutions are used (``onednn.gram``), else XLA's dot."""
    if onednn_convs() and flat.dtype == jnp.float32 and min(flat.shape) > 0 and onednn.available():
        return jnp.stack([onednn.gram(flat[b]) for b in range(flat.shape[0])])
    return jnp.einsum("bpc,bpd->bcd", flat, flat)
