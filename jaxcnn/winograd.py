"""float32 3x3 and 5x5 stride-1 convolutions by Winograd's minimal filtering, on the CPU (``csrc/winograd.cc``).

A 3x3 convolution computes each 4x4 block of outputs with 36 multiplications per channel pair
instead of 144 (F(4x4, 3x3)), a 5x5 one each 2x2 block with 36 instead of 100 (F(2x2, 5x5)): the
input patches (6x6 for both) and the kernel are transformed, multiplied as 36 matrix products
(oneDNN's sgemm), and transformed back (Lavin & Gray, 2016). oneDNN 3.2 has no float32 Winograd on
this CPU (its ``convolution_winograd`` is not implemented there, and ``convolution_auto`` picks the
direct one), and a version written in XLA ops lost to the direct convolution
(``benchmarks/RESULTS.md``), so the kernel is C++: each thread transforms a block of tiles,
multiplies and transforms back while the block is in its caches.

The result differs from the direct convolution by rounding: the transforms scale by up to 16 and
1/24, so the float32 error is about 3e-6 to 1e-5 of the output's magnitude instead of 1e-6
(``tests/test_winograd.py`` holds it to 3e-5 against float64). The input gradient of a stride-1
convolution is itself one (the kernel turned 180 degrees, its channel axes swapped), so it runs
here too; the weight gradient stays oneDNN's direct one.

``lowering.conv_general_dilated`` routes a convolution here where ``eligible`` holds (only
where the oneDNN convolutions run, and only while ``enabled()``; ``JAXCNN_WINOGRAD=0`` or
``with winograd.disabled():`` turns it off). Reverse mode only, like the oneDNN convolution.
"""

from __future__ import annotations

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import onednn

# Below these the direct convolution wins (``python benchmarks/winograd.py --layers``): with few
# tiles the transformed kernel (36 C x O floats, 4x a 3x3 kernel) costs more to make and stream than
# the products save, for 3x3 kernels the more so the wider the layer (MIN_TILES per 256 channels of
# the wider side); with few channels the 36 products are too thin for the GEMM. Per kernel size: a
# 3x3 kernel's tiles hold 4x4 outputs, a 5x5 one's 2x2, whose input transform costs four times as
# much per output, hence the higher bounds.
MIN_TILES = {3: 64, 5: 256}
MIN_CHANNELS = {3: 32, 5: 64}

# Up to this many tiles the kernel is transformed one block of 64 output channels at a time, inside
# each thread's caches, instead of once for all (36 C x O floats through memory).
FEW_TILES = 128

_enabled = os.environ.get("JAXCNN_WINOGRAD", "1") != "0"


def enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def disabled():
    """Traces with the direct convolutions only (for before/after measurements and tests)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _tile(r: int) -> int:
    """Outputs per tile side: 4 for a 3x3 kernel (F(4x4, 3x3)), 2 for a 5x5 one (F(2x2, 5x5))."""
    return 7 - r


def _tiles(n: int, oh: int, ow: int, r: int = 3) -> int:
    t = _tile(r)
    return n * -(-oh // t) * -(-ow // t)


def eligible(x, w, strides, padding, dilation, groups) -> bool:
    """Whether ``conv`` computes this NHWC x HWIO convolution (explicit ``padding`` pairs) fast."""
    r = w.shape[0] if w.ndim == 4 and w.shape[0] == w.shape[1] else 0
    if not (_enabled and x.dtype == jnp.float32 and w.dtype == jnp.float32 and x.ndim == 4
            and r in MIN_TILES and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and all(0 <= p < r for pair in padding for p in pair)):
        return False
    oh, ow = (x.shape[1 + a] + sum(padding[a]) - (r - 1) for a in range(2))
    c, o = w.shape[2], w.shape[3]
    widths = max(1.0, max(c, o) / 256) if r == 3 else 1.0
    return (oh > 0 and ow > 0 and min(c, o) >= MIN_CHANNELS[r]
            and _tiles(x.shape[0], oh, ow, r) >= MIN_TILES[r] * widths)


def _block(c: int, o: int) -> int:
    """Tiles per thread block: more for thin layers (a longer GEMM), fewer for wide ones (caches)."""
    return int(min(256, max(16, 16384 // max(c, o))))


def _call(x, w, pad_lo, out_hw, flip=False):
    """The C++ convolution; ``flip``: by ``w[::-1, ::-1]`` with its channel axes swapped, read in place."""
    c, o = (w.shape[3], w.shape[2]) if flip else (w.shape[2], w.shape[3])
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, o), jnp.float32)
    return jax.ffi.ffi_call("jaxcnn_winograd_conv", out, vmap_method="sequential")(
        x, w, pad_lo=np.asarray(pad_lo, np.int64), block=np.int64(_block(c, o)), few_tiles=np.int64(FEW_TILES),
        flip=flip)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, padding):
    (pt, pb), (pl, pr) = padding
    k = w.shape[0] - 1
    return _call(x, w, (pt, pl), (x.shape[1] + pt + pb - k, x.shape[2] + pl + pr - k))


def _conv_fwd(x, w, padding):
    return _conv(x, w, padding), (x, w)


def _conv_bwd(padding, res, g):
    x, w = res
    (pt, _), (pl, _) = padding
    k = w.shape[0] - 1
    dx = _call(g, w, (k - pt, k - pl), x.shape[1:3], flip=True)   # the kernel turned, I and O swapped
    dw = onednn.backward_weights(x, g, w.shape, padding)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x, w, padding):
    """``lax.conv_general_dilated(x, w, (1, 1), padding)`` for NHWC x HWIO float32 and an r x r kernel,
    r = 3 or 5, with every padding in 0..r-1 (``eligible``); needs ``onednn.available()``."""
    if not onednn.available():
        raise RuntimeError(f"the Winograd convolution needs the oneDNN shim: {onednn.why_unavailable()}")
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    if (x.ndim != 4 or w.ndim != 4 or w.shape[0] not in MIN_TILES or w.shape[1] != w.shape[0]
            or w.shape[2] != x.shape[3] or x.dtype != jnp.float32 or w.dtype != jnp.float32):
        raise ValueError(f"the Winograd convolution takes float32 NHWC x (r, r, C, O), r = 3 or 5, got "
                         f"{x.dtype}{x.shape} x {w.dtype}{w.shape}")
    r = w.shape[0]
    if len(padding) != 2 or not all(len(pair) == 2 and 0 <= p < r for pair in padding for p in pair):
        raise ValueError(f"the Winograd convolution of a {r}x{r} kernel takes padding 0..{r - 1} per side, "
                         f"got {padding}")
    return _conv(x, w, padding)
