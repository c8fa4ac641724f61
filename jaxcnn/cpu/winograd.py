"""float32 3x3 and 5x5 stride-1 convolutions by Winograd's minimal filtering, on the CPU (``csrc/winograd.cc``).

A 3x3 convolution computes each 4x4 block of outputs with 36 multiplications per channel pair
instead of 144 (F(4x4, 3x3)), a 5x5 one each 2x2 block with 36 instead of 100 (F(2x2, 5x5)): the
input patches (6x6 for both) and the kernel are transformed, multiplied as 36 matrix products
(oneDNN's sgemm), and transformed back (Lavin & Gray, 2016). oneDNN 3.2 has no float32 Winograd on
current x86 CPUs (its ``convolution_winograd`` is not implemented there, and ``convolution_auto``
picks the direct one), and the same algorithm written in XLA ops loses to the direct convolution
(its transforms become separate passes over memory), so the kernel is C++: each thread transforms a block of tiles,
multiplies and transforms back while the block is in its caches.

The result differs from the direct convolution by rounding: the transforms scale by up to 16 and
1/24, so the float32 error is about 3e-6 to 1e-5 of the output's magnitude instead of 1e-6
(``tests/test_winograd.py`` holds it to 3e-5 against float64). The input gradient of a stride-1
convolution is itself one (the kernel turned 180 degrees, its channel axes swapped), so it runs
here too; the weight gradient stays oneDNN's direct one.

``ops.conv_general_dilated`` routes a convolution here where ``eligible`` holds (only
where the oneDNN convolutions run, and only while ``policy.winograd_enabled()``;
``JAXCNN_WINOGRAD=0`` or ``with cpu.winograd_disabled():`` turns it off). Reverse mode only, like
the oneDNN convolution.
For weights that stay fixed over many calls, ``with_transforms`` makes the kernels' transforms once
and hands them to ``layers.Conv`` with the variables (``conv_transformed``, ``eligible_transformed``).
"""

from __future__ import annotations

import collections
import functools
import weakref
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcnn.cpu import build, onednn, policy

# Below these the direct convolution wins (``python -m benchmarks.cpu.winograd --layers``): with few
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

def _tile(r: int) -> int:
    """Outputs per tile side: 4 for a 3x3 kernel (F(4x4, 3x3)), 2 for a 5x5 one (F(2x2, 5x5))."""
    return 7 - r


def _tiles(n: int, oh: int, ow: int, r: int = 3) -> int:
    t = _tile(r)
    return n * -(-oh // t) * -(-ow // t)


def _defined(x, w, strides, padding, dilation, groups) -> int:
    """The number of tiles where this NHWC x HWIO convolution (explicit ``padding`` pairs) is one that
    ``conv`` computes while ``policy.winograd_enabled()``, else 0."""
    r = w.shape[0] if w.ndim == 4 and w.shape[0] == w.shape[1] else 0
    if not (policy.winograd_enabled() and (r != 5 or policy.enabled("winograd_5x5"))
            and x.dtype == jnp.float32 and w.dtype == jnp.float32 and x.ndim == 4 and r in MIN_TILES
            and w.shape[2] == x.shape[3] and tuple(strides) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1 and all(0 <= p < r for pair in padding for p in pair)):
        return 0
    oh, ow = (x.shape[1 + a] + sum(padding[a]) - (r - 1) for a in range(2))
    return _tiles(x.shape[0], oh, ow, r) if oh > 0 and ow > 0 else 0


def eligible(x, w, strides, padding, dilation, groups) -> bool:
    """Whether ``conv`` computes this NHWC x HWIO convolution (explicit ``padding`` pairs) fast."""
    tiles = _defined(x, w, strides, padding, dilation, groups)
    r, c, o = w.shape[0], w.shape[2], w.shape[3]
    widths = max(1.0, max(c, o) / 256) if r == 3 else 1.0
    return tiles > 0 and min(c, o) >= MIN_CHANNELS[r] and tiles >= MIN_TILES[r] * widths


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


# ---------------------------------------------------------------- fixed weights
# Where the weights stay the same over many calls (the input-optimisation loops: attacks, DeepDream,
# style transfer), their transforms can be made once, outside the compiled step, and passed in
# with the variables (``with_transforms``): each call then reads a kernel's transform instead of
# making it, forward and backward, which is most of a batch-1 or small-image layer's time, and the
# Winograd convolution beats the direct one also with few tiles, as long as the layer is wide
# (``MIN_WORK_TRANSFORMED``: tiles x C x O; ``python -m benchmarks.cpu.winograd --layers`` measures
# where it wins: VGG-19's 512-channel conv4 at one tile does, GoogLeNet's 192 -> 384 does not).
COLLECTION = "winograd"
MIN_WORK_TRANSFORMED = 1 << 18
_POINTS = 36   # the transforms' 6 x 6 points


def _needs_shim() -> None:
    if not build.available():
        raise RuntimeError(f"the Winograd convolution needs the oneDNN shim: {build.why_unavailable()}")


def transform(w, flip: bool = False):
    """The kernel transform (36, C, O) of an (r, r, C, O) float32 kernel, r = 3 or 5; with ``flip``, that of
    the input gradient's kernel (``w`` turned 180 degrees, its channel axes swapped: (36, O, C))."""
    _needs_shim()
    if w.ndim != 4 or w.shape[0] not in MIN_TILES or w.shape[1] != w.shape[0] or w.dtype != jnp.float32:
        raise ValueError(f"the Winograd kernel transform takes a float32 (r, r, C, O) kernel, r = 3 or 5, got "
                         f"{w.dtype}{w.shape}")
    _, _, c, o = w.shape
    out = jax.ShapeDtypeStruct((_POINTS, o, c) if flip else (_POINTS, c, o), jnp.float32)
    return jax.ffi.ffi_call("jaxcnn_winograd_kernel", out, vmap_method="sequential")(w, flip=flip)


def _transformable(path, w) -> bool:
    return (bool(path) and path[-1] == "kernel" and getattr(w, "ndim", 0) == 4 and w.dtype == jnp.float32
            and w.shape[0] == w.shape[1] and w.shape[0] in MIN_TILES and min(w.shape[2:]) >= MIN_CHANNELS[w.shape[0]])


@jax.jit
def _transforms(params):
    return traverse_util.unflatten_dict(
        {path[:-1] + (name,): transform(w, flip=name == "backward")
         for path, w in traverse_util.flatten_dict(params).items() if _transformable(path, w)
         for name in ("forward", "backward")})


# The transforms last made, by the identity of the parameters they were made of (jax arrays cannot
# change), held weakly: an entry goes when any of its parameters does. Making them again costs
# a noticeable share of a short attack call, which would otherwise pay it on every call.
_remembered: collections.OrderedDict = collections.OrderedDict()
REMEMBER = 2


def _remembered_transforms(params):
    leaves = jax.tree_util.tree_leaves(params)
    key = tuple(map(id, leaves))
    hit = _remembered.get(key)
    if hit is not None and all(ref() is leaf for ref, leaf in zip(hit[0], leaves)):
        _remembered.move_to_end(key)
        return hit[1]
    transforms = _transforms(params)
    if leaves and all(isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer) for a in leaves):
        forget = lambda _, key=key: _remembered.pop(key, None)  # noqa: E731
        _remembered[key] = ([weakref.ref(a, forget) for a in leaves], transforms)
        while len(_remembered) > REMEMBER:
            _remembered.popitem(last=False)
    return transforms


def with_transforms(variables, *, remember: bool = True):
    """``variables`` with the transforms of their float32 3x3 and 5x5 kernels added as the collection
    ``"winograd"`` (at each kernel's module: ``forward`` and ``backward``, the input gradient's), which
    ``layers.Conv`` then convolves with: for weights that stay fixed over many calls (the attacks and
    ``InputOptimizer`` call it); it holds 8x the kernels' memory. With ``remember``, the last
    ``REMEMBER`` results are kept for the same parameter arrays (for calls that cannot hold them, like
    the attacks). ``variables`` comes back as it is where the Winograd convolution does not run (off the
    CPU fast path, Winograd disabled) or the collection is there already."""
    if (not isinstance(variables, Mapping) or COLLECTION in variables or "params" not in variables
            or not (policy.winograd_enabled() and policy.enabled("fixed_weights") and policy.onednn_convs()
                    and build.available())):
        return variables
    params = dict(variables["params"])
    transforms = _remembered_transforms(params) if remember else _transforms(params)
    return {**variables, COLLECTION: transforms} if transforms else variables


def eligible_transformed(x, w, strides, padding, dilation, groups) -> bool:
    """Whether ``conv_transformed`` computes this NHWC x HWIO convolution (explicit ``padding`` pairs)
    fast, given the kernel's transforms."""
    tiles = _defined(x, w, strides, padding, dilation, groups)
    return tiles > 0 and (tiles * w.shape[2] * w.shape[3] >= MIN_WORK_TRANSFORMED
                          or eligible(x, w, strides, padding, dilation, groups))


def _call_transformed(x, u, r, pad_lo, out_hw):
    c, o = u.shape[1:]
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, o), jnp.float32)
    return jax.ffi.ffi_call("jaxcnn_winograd_conv_transformed", out, vmap_method="sequential")(
        x, u, pad_lo=np.asarray(pad_lo, np.int64), block=np.int64(_block(c, o)), few_tiles=np.int64(FEW_TILES),
        r=np.int64(r))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _conv_transformed(x, w, u, ut, padding):
    (pt, pb), (pl, pr) = padding
    k = w.shape[0] - 1
    return _call_transformed(x, u, w.shape[0], (pt, pl), (x.shape[1] + pt + pb - k, x.shape[2] + pl + pr - k))


def _conv_transformed_fwd(x, w, u, ut, padding):
    return _conv_transformed(x, w, u, ut, padding), (x, w, ut)


def _conv_transformed_bwd(padding, res, g):
    x, w, ut = res
    (pt, _), (pl, _) = padding
    k = w.shape[0] - 1
    dx = _call_transformed(g, ut, w.shape[0], (k - pt, k - pl), x.shape[1:3])
    dw = onednn.backward_weights(x, g, w.shape, padding)
    return dx, dw, None, None   # the transforms are taken as constants of w


_conv_transformed.defvjp(_conv_transformed_fwd, _conv_transformed_bwd)


def conv_transformed(x, w, forward, backward, padding):
    """``conv(x, w, padding)`` by ``w``'s transforms made beforehand: ``forward = transform(w)``,
    ``backward = transform(w, flip=True)`` (see ``with_transforms``)."""
    _needs_shim()
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    c, o = w.shape[2:]
    if forward.shape != (_POINTS, c, o) or backward.shape != (_POINTS, o, c):
        raise ValueError(f"the transforms of a {w.shape} kernel are (36, {c}, {o}) and (36, {o}, {c}), got "
                         f"{forward.shape} and {backward.shape}")
    return _conv_transformed(x, w, forward, backward, padding)


def conv(x, w, padding):
    """``lax.conv_general_dilated(x, w, (1, 1), padding)`` for NHWC x HWIO float32 and an r x r kernel,
    r = 3 or 5, with every padding in 0..r-1 (``eligible``); needs ``build.available()``."""
    _needs_shim()
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
