"""2-D convolutions and matrix products through oneDNN, as XLA FFI custom calls under custom VJPs.

XLA:CPU runs convolution weight gradients far below its matmul peak and computes bfloat16
convolutions and dots in float32; oneDNN (the library PyTorch uses on CPUs) runs the forward,
input-gradient and weight-gradient primitives near the machine's peak, with AMX for bfloat16
where the CPU has it (``benchmarks/cpu/conv_layers.py``, ``benchmarks/cpu/dense_layers.py``).
``conv`` and ``matmul`` are ``jax.custom_vjp`` functions over those calls; ``ops`` routes
NHWC/HWIO convolutions and dense layers here on the fast path when ``build.available()``.
Reverse mode only: ``jax.jvp`` through them needs ``cpu.mode("reference")``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.cpu import build


def _call(name: str, out: jax.ShapeDtypeStruct, a, b, geometry):
    strides, dilation, pad_lo, pad_hi, groups = geometry
    attrs = dict(strides=np.asarray(strides, np.int64), dilation=np.asarray(dilation, np.int64),
                 pad_lo=np.asarray(pad_lo, np.int64), pad_hi=np.asarray(pad_hi, np.int64),
                 groups=np.int64(groups))
    return jax.ffi.ffi_call(f"jaxcnn_conv_{name}", out, vmap_method="sequential")(a, b, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, geometry, out_hw):
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, w.shape[3]), x.dtype)
    return _call("forward", out, x, w, geometry)


def _conv_fwd(x, w, geometry, out_hw):
    return _conv(x, w, geometry, out_hw), (x, w)


def _conv_bwd(geometry, out_hw, res, g):
    x, w = res
    if by_taps(x.shape, w.shape, geometry):
        dx = input_gradient_by_taps(g, w, x.shape, geometry)
    else:
        dx = _call("backward_data", jax.ShapeDtypeStruct(x.shape, x.dtype), g, w, geometry)
    dw = _call("backward_weights", jax.ShapeDtypeStruct(w.shape, w.dtype), x, g, geometry)
    return dx, dw


# oneDNN's input gradient of a strided convolution into a few channels (the stem of an image model,
# which input optimisation differentiates) runs far slower than its forward. As one matrix product
# into the taps (dY @ W^T: every output pixel's 7 x 7 x 3 patch of input gradient) and the
# overlapping sum of the taps it takes about half the time (``python -m benchmarks.cpu.conv_layers
# --stems``).
MAX_TAPS_CHANNELS = 4


def by_taps(x_shape, w_shape, geometry) -> bool:
    """Whether the input gradient goes through ``input_gradient_by_taps``."""
    strides, dilation, _, _, groups = geometry
    return (groups == 1 and tuple(dilation) == (1, 1) and max(strides) > 1 and x_shape[3] <= MAX_TAPS_CHANNELS)


def input_gradient_by_taps(g, w, x_shape, geometry):
    """The input gradient of ``conv(x, w, geometry)`` given the output gradient ``g``, as the product
    ``g @ W^T`` into each output pixel's patch of taps, whose overlapping patches are then summed: per
    output parity class (row mod stride, column mod stride), a sum of shifted tap planes. In float32,
    also for bfloat16 operands (cast back at the end)."""
    (sh, sw), _, (lo_h, lo_w), (hi_h, hi_w), _ = geometry
    n, oh, ow, o = g.shape
    kh, kw, c, _ = w.shape
    taps = lax.dot_general(g, w.reshape(kh * kw * c, o), (((3,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32).reshape(n, oh, ow, kh, kw, c)
    rows, cols = -(-(x_shape[1] + lo_h + hi_h) // sh), -(-(x_shape[2] + lo_w + hi_w) // sw)
    classes = []
    for p in range(sh):
        for q in range(sw):
            acc = jnp.zeros((n, rows, cols, c), jnp.float32)
            for a in range(-(-(kh - p) // sh)):
                for b in range(-(-(kw - q) // sw)):
                    acc = acc + jnp.pad(taps[:, :, :, a * sh + p, b * sw + q],
                                        ((0, 0), (a, rows - oh - a), (b, cols - ow - b), (0, 0)))
            classes.append(acc)
    padded = (jnp.stack(classes).reshape(sh, sw, n, rows, cols, c).transpose(2, 3, 0, 4, 1, 5)
              .reshape(n, rows * sh, cols * sw, c))
    return padded[:, lo_h:lo_h + x_shape[1], lo_w:lo_w + x_shape[2]].astype(g.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def backward_weights(x, g, w_shape, padding, strides=(1, 1), dilation=(1, 1), groups: int = 1):
    """oneDNN's weight gradient of the convolution ``conv(x, w, strides, padding, ...)`` given the output
    gradient ``g`` (``padding`` as the pairs actually read: no cropping here)."""
    lo, hi = tuple(p[0] for p in padding), tuple(p[1] for p in padding)
    return _call("backward_weights", jax.ShapeDtypeStruct(tuple(w_shape), x.dtype), x, g,
                 (tuple(strides), tuple(dilation), lo, hi, int(groups)))


def supports(x, w, lhs_dilation=None, feature_group_count: int = 1) -> bool:
    """Whether ``conv`` takes these operands (it needs ``build.available()`` as well)."""
    return (x.ndim == 4 and w.ndim == 4 and x.dtype == w.dtype and build.dtype_supported(x.dtype)
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and min(x.shape) > 0
            and x.shape[3] == w.shape[2] * feature_group_count)


def conv(x, w, strides, padding, dilation=(1, 1), groups: int = 1):
    """NHWC x HWIO convolution, explicit ``padding`` ((lo, hi), (lo, hi)), computed by oneDNN.

    Negative padding is cropped from the input first. Input past the last window (a 1x1
    stride-2 convolution of an even size never reads the last row and column) is not: oneDNN
    takes the geometry as long as floor division gives the same output size, and a crop would
    copy the whole input (ResNet-50's three downsampling 1x1 convolutions).
    """
    if not build.available():
        raise RuntimeError(f"oneDNN convolutions are unavailable: {build.why_unavailable()}")
    if not build.dtype_supported(x.dtype):
        raise ValueError(f"oneDNN has no {jnp.dtype(x.dtype).name} convolutions on this CPU (see dtype_supported)")
    strides, dilation = tuple(int(s) for s in strides), tuple(int(d) for d in dilation)
    lo, hi, out_hw, crop = [], [], [], []
    for axis in range(2):
        (pl, ph), size = padding[axis], x.shape[1 + axis]
        extent = (w.shape[axis] - 1) * dilation[axis] + 1
        n_out = (size + pl + ph - extent) // strides[axis] + 1
        if n_out <= 0:
            raise ValueError(f"convolution output is empty: input {x.shape}, kernel {w.shape}")
        ph = (n_out - 1) * strides[axis] + extent - size - pl    # the right padding actually read
        start, stop = max(0, -pl), size
        if (stop - start + max(pl, 0) + max(ph, 0) - extent) // strides[axis] + 1 != n_out:
            stop = size + ph                                     # unread input oneDNN would count
        crop.append((start, stop))
        lo.append(max(pl, 0))
        hi.append(max(ph, 0))
        out_hw.append(n_out)
    if crop != [(0, x.shape[1]), (0, x.shape[2])]:
        x = x[:, crop[0][0]:crop[0][1], crop[1][0]:crop[1][1]]
    return _conv(x, w, (strides, dilation, tuple(lo), tuple(hi), int(groups)), tuple(out_hw))


# ---------------------------------------------------------------- matrix product (dense layers)
def _mm(a, b, transpose_a: bool = False, transpose_b: bool = False):
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    return jax.ffi.ffi_call("jaxcnn_matmul", jax.ShapeDtypeStruct((m, n), a.dtype), vmap_method="sequential")(
        a, b, transpose_a=transpose_a, transpose_b=transpose_b)


@jax.custom_vjp
def matmul(a, b):
    """``a @ b`` for 2-D float32 or bfloat16 operands of one dtype, computed by oneDNN (AMX for bfloat16)."""
    return _mm(a, b)


def _matmul_fwd(a, b):
    return _mm(a, b), (a, b)


def _matmul_bwd(res, g):
    a, b = res
    # The weight gradient a^T g has a small inner dimension (the batch): in float32 XLA's dot
    # runs it faster than oneDNN's; in bfloat16 XLA would compute it in float32 with conversions
    # around it, several times slower than oneDNN (``python -m benchmarks.cpu.dense_layers``).
    dw = _mm(a, g, transpose_a=True) if a.dtype == jnp.bfloat16 else jnp.dot(a.T, g)
    return _mm(g, b, transpose_b=True), dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ---------------------------------------------------------------- Gram matrix F^T F (style losses)
@jax.custom_vjp
def gram(f):
    """``f.T @ f`` for a 2-D float32 ``f`` of P rows (pixels) and C columns (channels), by oneDNN
    (why: ``ops.gram``); its gradient ``f @ (g + g.T)`` too."""
    return _mm(f, f, transpose_a=True)


def _gram_fwd(f):
    return gram(f), f


def _gram_bwd(f, g):
    return (_mm(f, g + g.T),)


gram.defvjp(_gram_fwd, _gram_bwd)
