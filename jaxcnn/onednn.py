"""2-D convolutions and matrix products through oneDNN on the CPU, as XLA FFI custom calls.

XLA:CPU runs convolution *weight gradients* at 30-70 GFLOP/s on this project's CPU
while its GEMMs reach 340, and it computes bfloat16 convolutions in float32. oneDNN
(the library PyTorch uses on CPUs) runs the same three convolutions (forward, input
gradient, weight gradient) at 400-470 GFLOP/s in float32 and, on CPUs with AMX,
1.8-3.8 TFLOP/s in bfloat16 (``benchmarks/RESULTS.md``). ``matmul`` does the same for
dense layers. This module builds the small C++ shims in ``csrc/`` (``onednn_conv.cc``,
``onednn_matmul.cc``, ``max_pool.cc``, ``batch_norm.cc`` and ``winograd.cc``; the last three are
the C++ max pool, training-mode batch norm and Winograd convolutions ``lowering`` uses)
into one shared object on first use (``g++``, the oneDNN headers
and library of the ``onednn-devel-cpu-gomp`` / ``onednn-cpu-gomp`` wheels, and
jaxlib's FFI headers), caches the shared object under ``~/.cache/jaxcnn``
(``JAXCNN_CACHE`` overrides), and registers its handlers with XLA.

``conv`` is a ``jax.custom_vjp`` over three FFI calls. ``lowering.conv_general_dilated``
routes NHWC/HWIO float32 and bfloat16 convolutions here on the CPU fast path when
``available()``; anything else (no compiler, no oneDNN, another dtype, input
dilation) stays on XLA's convolution. Like the max-pool fast path this is reverse
mode only: ``jax.jvp`` through it needs ``lowering.mode("reference")``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_SOURCES = [pathlib.Path(__file__).parent / "csrc" / f for f in ("onednn_conv.cc", "onednn_matmul.cc",
                                                                      "max_pool.cc", "batch_norm.cc", "winograd.cc")]
_TARGETS = {"jaxcnn_conv_forward": "JaxcnnConvForward", "jaxcnn_conv_backward_data": "JaxcnnConvBackwardData",
            "jaxcnn_conv_backward_weights": "JaxcnnConvBackwardWeights",
            "jaxcnn_matmul": "JaxcnnMatMul",                              # onednn_matmul.cc
            "jaxcnn_max_pool_forward": "JaxcnnMaxPoolForward",          # max_pool.cc, see lowering.max_pool
            "jaxcnn_max_pool_forward_train": "JaxcnnMaxPoolForwardTrain",
            "jaxcnn_max_pool_backward": "JaxcnnMaxPoolBackward",
            "jaxcnn_batch_norm_forward": "JaxcnnBatchNormForward",      # batch_norm.cc, see lowering.batch_norm
            "jaxcnn_batch_norm_backward": "JaxcnnBatchNormBackward",
            "jaxcnn_winograd_conv": "JaxcnnWinogradConv",                 # winograd.cc, see jaxcnn.winograd
            "jaxcnn_winograd_conv_transformed": "JaxcnnWinogradConvTransformed",
            "jaxcnn_winograd_kernel": "JaxcnnWinogradKernel"}
_why_not: str | None = None


def _wheel_dir(dist: str, suffix: str) -> pathlib.Path:
    """The directory holding the file of ``dist`` whose path ends with ``suffix``."""
    files = importlib.metadata.distribution(dist).files or ()
    for f in files:
        if str(f).endswith(suffix):
            return pathlib.Path(f.locate()).resolve().parent
    raise FileNotFoundError(f"{dist} has no {suffix}")


def _cpu_flags() -> bytes:
    try:
        return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").encode()
    except OSError:
        return b""


def _build() -> pathlib.Path:
    include = _wheel_dir("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp").parent.parent
    lib = _wheel_dir("onednn-cpu-gomp", "libdnnl.so.3")
    flags = ["-O3", "-march=native", "-w", "-std=c++17", "-fopenmp", "-shared", "-fPIC", f"-I{include}",
             f"-I{jax.ffi.include_dir()}", f"-L{lib}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib}"]
    tag = hashlib.sha256(b"".join(f.read_bytes() for f in (*_SOURCES, _SOURCES[0].with_name("shim.h")))
                         + " ".join(flags).encode()
                         + jax.__version__.encode() + _cpu_flags()).hexdigest()[:16]   # -march=native: per CPU
    cache = pathlib.Path(os.environ.get("JAXCNN_CACHE", pathlib.Path.home() / ".cache" / "jaxcnn"))
    out = cache / f"onednn_conv-{tag}.so"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:   # build aside, then rename: safe across processes
        part = pathlib.Path(tmp) / out.name
        cmd = [os.environ.get("CXX", "g++"), *map(str, _SOURCES), "-o", str(part), *flags]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            errors = [line for line in run.stderr.splitlines() if "error" in line] or run.stderr.splitlines()
            raise RuntimeError(f"building {out.name} failed: {errors[0].strip() if errors else run.returncode}")
        os.replace(part, out)
    return out


@functools.cache
def _library() -> ctypes.CDLL | None:
    global _why_not
    if os.environ.get("JAXCNN_ONEDNN", "1") == "0":
        _why_not = "disabled by JAXCNN_ONEDNN=0"
        return None
    # OpenMP threads that sleep when idle instead of spinning, so that an idle team leaves the
    # cores to XLA's threads (tiny FCN train step 10.1 -> 8.0 ms; ResNet-50 unchanged). Read
    # when libgomp loads, so it only holds where no OpenMP runtime was loaded before.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        lib = ctypes.CDLL(str(_build()))
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
        return lib
    except (OSError, RuntimeError, FileNotFoundError, importlib.metadata.PackageNotFoundError) as err:
        _why_not = f"{type(err).__name__}: {err}"
        warnings.warn(f"jaxcnn: oneDNN convolutions unavailable, using XLA's ({_why_not})", stacklevel=3)
        return None


def available() -> bool:
    """Whether the oneDNN convolutions can be used here (builds them on the first call)."""
    return _library() is not None


def why_unavailable() -> str | None:
    _library()
    return _why_not


@functools.cache
def _bf16() -> bool:
    lib = _library()
    return lib is not None and bool(lib.JaxcnnBf16Supported())


def dtype_supported(dtype) -> bool:
    """Whether oneDNN's convolutions and matrix products take ``dtype`` on this CPU: float32
    always; bfloat16 where oneDNN builds those primitives (3.2: from AVX-512 on; on an AVX2-only
    CPU, such as AMD's Zen 3, XLA's bfloat16 ops stay)."""
    return dtype == jnp.float32 or (dtype == jnp.bfloat16 and _bf16())


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
# which input optimisation differentiates) runs at a quarter of its forward's speed (PGD's profile:
# ResNet-18's 7x7/2 stem, backward data 17.5 ms/step against 3.9 forward). As one matrix product
# into the taps (dY @ W^T: every output pixel's 7 x 7 x 3 patch of input gradient) and the
# overlapping sum of the taps it takes about half the time: batch 8, 128 px, 15.7 -> 8.5 ms; 224
# px 47.5 -> 23.7; batch 1, 224 px 6.6 -> 3.9 (``python benchmarks/conv_layers.py --stems``,
# benchmarks/RESULTS.md).
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
    """Whether ``conv`` takes these operands (it needs ``available()`` as well)."""
    return (x.ndim == 4 and w.ndim == 4 and x.dtype == w.dtype and dtype_supported(x.dtype)
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and min(x.shape) > 0
            and x.shape[3] == w.shape[2] * feature_group_count)


def conv(x, w, strides, padding, dilation=(1, 1), groups: int = 1):
    """NHWC x HWIO convolution, explicit ``padding`` ((lo, hi), (lo, hi)), computed by oneDNN.

    Negative padding is cropped from the input first. Input past the last window (a 1x1
    stride-2 convolution of an even size never reads the last row and column) is not: oneDNN
    takes the geometry as long as floor division gives the same output size, and a crop would
    copy the whole input (ResNet-50's three downsampling 1x1 convolutions: 24 ms of a 645 ms
    inference batch).
    """
    if _library() is None:
        raise RuntimeError(f"oneDNN convolutions are unavailable: {_why_not}")
    if not dtype_supported(x.dtype):
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
    # runs it faster than oneDNN's (AlexNet fc6 at batch 32: 15 vs 22 ms); in bfloat16 XLA
    # would compute it in float32 with conversions around it (4x slower than oneDNN here).
    dw = _mm(a, g, transpose_a=True) if a.dtype == jnp.bfloat16 else jnp.dot(a.T, g)
    return _mm(g, b, transpose_b=True), dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ---------------------------------------------------------------- Gram matrix F^T F (style losses)
@jax.custom_vjp
def gram(f):
    """``f.T @ f`` for a 2-D float32 ``f`` of P rows (pixels) and C columns (channels), by oneDNN
    (why: ``lowering``'s docstring); its gradient ``f @ (g + g.T)`` too."""
    return _mm(f, f, transpose_a=True)


def _gram_fwd(f):
    return gram(f), f


def _gram_bwd(f, g):
    return (_mm(f, g + g.T),)


gram.defvjp(_gram_fwd, _gram_bwd)
