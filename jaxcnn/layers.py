"""Building blocks shared by the model families, with PyTorch's semantics.

Everything here works on NHWC arrays. Pooling follows ``torch.nn`` exactly
(explicit symmetric padding, ``ceil_mode``, ``count_include_pad``,
``AdaptiveAvgPool2d`` windows), because the models must reproduce
torchvision's outputs with the same weights.

Conventions shared by all models:

* convolutions are plain ``flax.linen.Conv`` modules with explicit padding;
* normalization runs in float32 whatever the compute dtype
  (``batch_norm``), and so does local response normalization;
* modules are named after the torchvision module path they mirror
  (``"layer1.0"``, ``"features.3"``), so a torchvision state dict maps onto
  the Flax variables key by key (see ``jaxcnn.weights``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.cpu import ops
from jaxcnn.cpu.winograd import COLLECTION as WINOGRAD

Dtype = Any


# ----------------------------------------------------------------------------
# input validation


def check_images(x: Any, *, model: str, min_size: int = 1) -> jax.Array:
    """Validates an NHWC float image batch; raises a one-line ValueError.

    Returns ``x`` as a JAX array. ``min_size`` is the smallest height/width for
    which the model's feature maps are non-empty.
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"{model} expects an NHWC image array, got {type(x).__name__}")
    if len(shape) != 4:
        raise ValueError(
            f"{model} expects NHWC images of rank 4 (batch, height, width, 3); got shape {tuple(shape)}")
    if shape[-1] != 3:
        hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(
            f"{model} expects 3 colour channels in the last axis (NHWC); got shape {tuple(shape)}{hint}")
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating) and dtype != jnp.bfloat16:
        raise ValueError(
            f"{model} expects floating-point images normalized with jaxcnn.preprocess; got dtype {dtype}")
    if shape[1] < min_size or shape[2] < min_size:
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size} pixels; got {shape[1]}x{shape[2]}")
    return jnp.asarray(x)


# ----------------------------------------------------------------------------
# convolution and normalization factories


def pad2(p: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch-style symmetric padding ``p`` (int or (ph, pw)) for ``nn.Conv``."""
    ph, pw = (p, p) if isinstance(p, int) else p
    return ((ph, ph), (pw, pw))


def conv(features: int, kernel: int | tuple[int, int], *, stride: int = 1, padding: int | tuple[int, int] = 0,
         groups: int = 1, dilation: int = 1, bias: bool = True, name: str | None = None,
         dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
         kernel_init: Callable | None = None, bias_init: Callable | None = None) -> Conv:
    """A ``flax.linen.Conv`` configured like ``torch.nn.Conv2d``."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    kwargs = {}
    if kernel_init is not None:
        kwargs["kernel_init"] = kernel_init
    if bias_init is not None:
        kwargs["bias_init"] = bias_init
    return Conv(features, (kh, kw), strides=(stride, stride), padding=pad2(padding),
                kernel_dilation=(dilation, dilation), feature_group_count=groups, use_bias=bias,
                dtype=dtype, param_dtype=param_dtype, name=name,
                conv_general_dilated=ops.conv_general_dilated, **kwargs)


class Conv(nn.Conv):
    """``flax.linen.Conv`` for NHWC images whose bias goes through ``ops.bias_add`` (its bfloat16
    gradient is summed in float32 on the CPU) and which convolves with the kernel's Winograd transforms
    where the variables hold them (``jaxcnn.cpu.fixed_weights``). The same variables, initialised in
    the same order; anything but a 4-D input with explicit padding is flax's own code."""

    @nn.compact
    def __call__(self, inputs):
        explicit_pads = not isinstance(self.padding, (str, int)) and all(len(p) == 2 for p in self.padding)
        if (self.mask is not None or inputs.ndim != 4 or not explicit_pads
                or isinstance(self.kernel_size, int) or len(self.kernel_size) != 2):
            return super().__call__(inputs)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v or (1, 1))  # noqa: E731
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, inputs.shape[-1] // self.feature_group_count, self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel = self.promote_dtype(inputs, kernel, dtype=self.dtype)
        conv = self.conv_general_dilated or ops.conv_general_dilated
        extra = {}
        if conv is ops.conv_general_dilated and self.has_variable(WINOGRAD, "forward"):
            extra["transforms"] = (self.get_variable(WINOGRAD, "forward"),
                                   self.get_variable(WINOGRAD, "backward"))
        y = conv(x, kernel, pair(self.strides), tuple(map(tuple, self.padding)),
                 lhs_dilation=pair(self.input_dilation), rhs_dilation=pair(self.kernel_dilation),
                 dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.feature_group_count,
                 precision=self.precision, **extra)
        return y if bias is None else ops.bias_add(y, bias)


def dense(features: int, *, name: str | None = None, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, **kwargs) -> nn.Dense:
    """A ``flax.linen.Dense`` (``torch.nn.Linear``) whose product goes through ``ops.dot_general``."""
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                    dot_general=ops.dot_general, **kwargs)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for 2-D arrays through the product dense layers use (``ops.dot_general``: oneDNN on the CPU
    fast path, XLA's dot elsewhere); ``jaxcnn.bench.peak`` times it for the matrix-unit peak."""
    return ops.dot_general(a, b, (((1,), (0,)), ((), ())))


class BatchNorm(nn.BatchNorm):
    """``flax.linen.BatchNorm`` whose training-mode statistics and normalization run the C++
    kernel of ``ops.batch_norm`` where it applies (the CPU fast path); the same variables,
    the same running-average update. Everywhere else (other backends, several devices,
    initialization, evaluation, ``pmap``'s ``axis_name``, masks, non-float32 settings) it is
    flax's own code."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if (running or self.is_initializing() or not ops.native_batch_norm(x) or mask is not None
                or self.axis_name is not None
                or self.axis not in (-1, x.ndim - 1) or not (self.use_bias and self.use_scale)
                or self.dtype != jnp.float32 or self.param_dtype != jnp.float32):
            return super().__call__(x, use_running_average, mask=mask)
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
        y, mean, var = ops.batch_norm(x, scale, bias, self.epsilon)
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


def batch_norm(train: bool, *, name: str | None = None, eps: float = 1e-5, param_dtype: Dtype = jnp.float32,
               axis_name: str | None = None, scale_init: Callable = nn.initializers.ones) -> nn.BatchNorm:
    """``torch.nn.BatchNorm2d`` (momentum 0.1) computing in float32.

    ``axis_name`` makes the batch statistics cross-replica under ``pmap``;
    under ``jit`` with a sharded batch they are global already.
    """
    return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=eps, dtype=jnp.float32,
                     param_dtype=param_dtype, axis_name=axis_name, scale_init=scale_init, name=name)


# torchvision's initializers, used so that training from scratch starts where torchvision's does
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
kaiming_uniform_a_sqrt5 = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def local_response_norm(x: jax.Array, *, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0, groups: int = 1) -> jax.Array:
    """Local response normalization across channels (Krizhevsky et al. 2012, sec. 3.3).

    ``b_i = a_i / (k + alpha * sum_{j=i-size//2}^{i+(size-1)//2} a_j**2) ** beta``

    with the paper's convention: ``alpha`` multiplies the plain sum (PyTorch's
    ``nn.LocalResponseNorm`` and Caffe divide it by ``size``; pass
    ``alpha * size`` there for the same result). ``groups`` splits the channels
    into independent towers: in the two-GPU net, a kernel's neighbours are the
    kernels of its own tower only. Computed in float32.
    """
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"local_response_norm: {c} channels do not split into {groups} groups")
    xf = x.astype(jnp.float32)
    sq = (xf * xf).reshape(n, h, w, groups, c // groups)
    summed = lax.reduce_window(sq, np.array(0, sq.dtype), lax.add, (1, 1, 1, 1, size), (1, 1, 1, 1, 1),
                               ((0, 0), (0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2)))
    y = xf / (k + alpha * summed.reshape(n, h, w, c)) ** beta
    return y.astype(x.dtype)


# ----------------------------------------------------------------------------
# pooling with torch semantics


def _pool_pads(size: int, k: int, s: int, p: int, ceil_mode: bool) -> tuple[int, int]:
    if ceil_mode:
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside the image or left padding
            out -= 1
        return p, max(p, (out - 1) * s + k - size - p)
    return p, p


def _pairs(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def max_pool(x: jax.Array, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: int | Sequence[int] = 0, ceil_mode: bool = False) -> jax.Array:
    """``torch.nn.MaxPool2d`` on NHWC (padding counts as -inf)."""
    kh, kw = _pairs(kernel)
    sh, sw = _pairs(stride if stride is not None else kernel)
    ph, pw = _pairs(padding)
    pads = ((0, 0), _pool_pads(x.shape[1], kh, sh, ph, ceil_mode), _pool_pads(x.shape[2], kw, sw, pw, ceil_mode),
            (0, 0))
    return ops.max_pool(x, (1, kh, kw, 1), (1, sh, sw, 1), pads)


def avg_pool(x: jax.Array, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: int | Sequence[int] = 0, count_include_pad: bool = True, ceil_mode: bool = False) -> jax.Array:
    """``torch.nn.AvgPool2d`` on NHWC. With ``ceil_mode`` (Caffe's only mode) a last window that overhangs
    the padded input averages what it covers: the overhang never counts, the explicit padding does when
    ``count_include_pad``."""
    kh, kw = _pairs(kernel)
    sh, sw = _pairs(stride if stride is not None else kernel)
    ph, pw = _pairs(padding)
    pads = ((0, 0), _pool_pads(x.shape[1], kh, sh, ph, ceil_mode), _pool_pads(x.shape[2], kw, sw, pw, ceil_mode),
            (0, 0))
    window, strides = (1, kh, kw, 1), (1, sh, sw, 1)
    summed = lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, pads)
    if pads == ((0, 0), (ph, ph), (pw, pw), (0, 0)) and (count_include_pad or (ph == 0 and pw == 0)):
        return summed / (kh * kw)
    # the divisor: covered input, plus the explicit padding when it counts (never the ceil-mode overhang)
    inner = ((ph, ph), (pw, pw)) if count_include_pad else ((0, 0), (0, 0))
    ones = jnp.pad(jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype), ((0, 0), *inner, (0, 0)), constant_values=1)
    rest = tuple((lo - a, hi - b) for (lo, hi), (a, b) in zip(pads[1:3], inner))
    counts = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, window, strides, ((0, 0), *rest, (0, 0)))
    return summed / counts


@functools.lru_cache(maxsize=None)
def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d`` on NHWC: the same (possibly overlapping) windows.

    Implemented as two small averaging matrices, so it also upsamples when the
    input is smaller than ``output_size`` (as torch does).
    """
    oh, ow = _pairs(output_size)
    h, w = x.shape[1], x.shape[2]
    if (h, w) == (oh, ow):
        return x
    if (oh, ow) == (1, 1):
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
    return jnp.einsum("nhwc,ph,qw->npqc", x, mh, mw)


def flatten_chw(x: jax.Array) -> jax.Array:
    """Flattens NHWC in torch's (C, H, W) order, so classifier weights need no permutation."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize equal to ``F.interpolate(mode='bilinear', align_corners=False)`` when upsampling."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear", antialias=False)


def gram(flat: jax.Array) -> jax.Array:
    """Per image ``F^T F`` of features ``flat`` (B, P, C) -> (B, C, C), the product of style losses
    (oneDNN's on the CPU fast path, ``jaxcnn.cpu.ops.gram``)."""
    return ops.gram(flat)
