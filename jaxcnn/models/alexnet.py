"""AlexNet: torchvision's single tower, the original two-tower net, and ZFNet.

``alexnet``: torchvision's variant (64-192-384-256-256 kernels, no LRN, an
adaptive 6x6 average pool before the classifier, dropout on the inputs of
fc6 and fc7). Module names are torchvision's (``features.0`` ...
``classifier.6``); init is torch's default (kaiming-uniform a=sqrt(5)
weights, U(+-1/sqrt(fan_in)) biases).

``alexnet_twotower``: Krizhevsky, Sutskever & Hinton 2012 as published:
96-256-384-384-256 kernels, 11x11 stride-4 stem (padding 2, so 224 px gives
55x55), local response normalization (k=2, n=5, alpha=1e-4, beta=0.75, the
paper's convention) after the ReLUs of the first two layers, overlapping 3x3/2
max pools, fc 4096-4096 with dropout on their outputs. 60,965,224 parameters.
Initialisation as in the paper: weights N(0, 0.01), biases 1 in conv2, conv4,
conv5, fc6 and fc7, 0 elsewhere.

Tower layout (two-tower net): the two GPUs' towers are channel halves. In
every layer the first half of the output channels (and of the LRN's
channels) is tower A, the second half tower B. conv2, conv4 and conv5 are
grouped convolutions (``groups=2``): their kernels have shape
``(k, k, C_in / 2, C_out)`` and output half g sees only input half g; LRN
neighbourhoods stop at the tower boundary. conv1 (each tower sees the whole
image), conv3 and the fully connected layers see both towers: they are where
the GPUs communicate.

Given ``tower_axis`` (a mesh axis name, under ``jax.shard_map``), the net is
one tower's program: each device holds its tower's slice of every parameter
(the output half of each kernel, and the input half of fc8's) and the model
performs the paper's exchanges itself, an ``all_gather`` over ``tower_axis``
of the input of conv3, fc6 and fc7 and a ``psum`` of fc8's partial logits.
Placement (which device holds which tower) is
``jaxcnn.parallel.model_parallel``'s business. With ``tower_axis=None`` it is
the single-device net; the parameter tree and names are the same either way.

``zfnet``: Zeiler & Fergus 2013: a 7x7 stride-2 first layer (96 kernels,
padding 1), a 5x5 stride-2 second layer, 3x3/2 max pools rounding up (Caffe)
after the first two layers, each followed by contrast normalization (the same
LRN, one tower), conv3-5 384-384-256, a 3x3/2 pool5, fc 4096-4096 with
dropout. Maps 110-55-26-13-13-13-13-6 at 224 px (the paper's Figure 3). Init
as in the paper: weights N(0, 0.01), biases 0.

All three take images of at least 63x63 (the smallest size whose pool5 is
non-empty; ``min_input_size`` computes it from the layer table).

Features (Caffe naming; a conv name is its post-ReLU activation, NHWC):
  ``conv1``..``conv5``  post-ReLU convolutions; strides 4, 8, 16, 16, 16
                        (ZFNet 2, 8, 16, 16, 16)
  ``pool1``, ``pool2``, ``pool5``  max pools; strides 8, 16, 32 (ZFNet 4, 16, 32)
  ``norm1``, ``norm2``  LRN outputs (two-tower and ZFNet only): after the
                        ReLU and before the pool in the two-tower net, after
                        the pool in ZFNet
  ``fc6``, ``fc7``      post-ReLU fully connected, (N, 4096), before dropout
  ``pre_logits``        the input of the last layer, (N, 4096): fc7 in
                        torchvision's net, fc7 after dropout in the papers'
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.layers import dense as linear
from jaxcnn.layers import (adaptive_avg_pool, check_images, conv, flatten_chw, kaiming_uniform_a_sqrt5,
                           local_response_norm, max_pool)
from jaxcnn.models.registry import register

Dtype = Any


def min_input_size(convs: Sequence[tuple[int, int, int]], ceil_mode: bool = False) -> int:
    """Smallest square input for which pool5 is non-empty.

    ``convs`` are the (kernel, stride, padding) of conv1..conv5; 3x3/2 max
    pools follow conv1, conv2 (rounding up if ``ceil_mode``, with torch's rule
    that the last window starts inside the map) and conv5 (rounding down).
    """

    def pool(h: int, ceil: bool) -> int:
        if ceil:
            out = -(-(h - 3) // 2) + 1
            return out - 1 if (out - 1) * 2 >= h else out
        return (h - 3) // 2 + 1 if h >= 3 else 0

    def pool5_size(h: int) -> int:
        for i, (k, s, p) in enumerate(convs):
            h = (h + 2 * p - k) // s + 1 if h > 0 and h + 2 * p >= k else 0
            if i < 2 and h > 0:
                h = pool(h, ceil_mode)
        return pool(h, False) if h > 0 else 0

    return next(h for h in range(1, 1024) if pool5_size(h) > 0)


def _torch_bias(fan_in: int) -> Callable:
    """torch's default ``nn.Conv2d`` / ``nn.Linear`` bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class AlexNet(nn.Module):
    """torchvision's AlexNet. ``__call__(x, train=False)``: (N, H, W, 3), H, W >= 63 -> (logits, features)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    MIN_SIZE = min_input_size(((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)))

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="AlexNet", min_size=self.MIN_SIZE).astype(self.dtype)
        feats: dict = {}

        # torch's bias init needs the fan-in: ``x`` is the layer's input when ``c`` / ``dense`` is called
        def c(n, k, name, **kw):
            return conv(n, k, name=name, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=kaiming_uniform_a_sqrt5, bias_init=_torch_bias(x.shape[-1] * k * k), **kw)

        def dense(n, name):
            return linear(n, name=name, dtype=self.dtype, param_dtype=self.param_dtype,
                            kernel_init=kaiming_uniform_a_sqrt5, bias_init=_torch_bias(x.shape[-1]))

        drop = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = feats["conv1"] = nn.relu(c(64, 11, "features.0", stride=4, padding=2)(x))
        x = feats["pool1"] = max_pool(x, 3, 2)
        x = feats["conv2"] = nn.relu(c(192, 5, "features.3", padding=2)(x))
        x = feats["pool2"] = max_pool(x, 3, 2)
        x = feats["conv3"] = nn.relu(c(384, 3, "features.6", padding=1)(x))
        x = feats["conv4"] = nn.relu(c(256, 3, "features.8", padding=1)(x))
        x = feats["conv5"] = nn.relu(c(256, 3, "features.10", padding=1)(x))
        x = feats["pool5"] = max_pool(x, 3, 2)
        x = flatten_chw(adaptive_avg_pool(x, 6))
        x = feats["fc6"] = nn.relu(dense(4096, "classifier.1")(drop()(x)))
        x = feats["fc7"] = nn.relu(dense(4096, "classifier.4")(drop()(x)))
        feats["pre_logits"] = x
        logits = dense(self.num_classes, "classifier.6")(x)
        return logits.astype(jnp.float32), feats


class PaperAlexNet(nn.Module):
    """The papers' nets (two-tower AlexNet, ZFNet); a variant is a row of ``_PAPER_NETS``.

    ``convs``: (kernels, size, stride, padding, groups, bias init) of conv1..conv5.
    ``towers``: LRN groups (neighbourhoods stay within a tower).
    ``norm_before_pool``: LRN between ReLU and pool (AlexNet) or after the pool (ZFNet).
    ``ceil_mode``: pool1 and pool2 round up (pool5 rounds down).
    ``fc_bias``: bias init of fc6 and fc7.
    ``fc_width``: units of fc6 and fc7 (4096 in the papers; smaller for small data or tests).
    ``tower_axis``: under ``jax.shard_map``, the mesh axis of size ``towers`` that holds one tower per
      device: the net computes its tower's half of every layer and exchanges activations where the paper's
      GPUs do. None: the whole net on one device.
    ``batch_axis``: under ``jax.shard_map``, the mesh axis the batch is split over (or None), so that
      dropout keeps the masks the single-device net draws for this device's examples.

    ``__call__(x, train=False)``: (N, H, W, 3), H, W >= 63 -> (logits, features); with ``tower_axis``
    the features are this tower's channel (unit) half and the logits are whole.
    """

    convs: Sequence[tuple[int, int, int, int, int, float]]
    towers: int
    norm_before_pool: bool
    ceil_mode: bool
    fc_bias: float
    arch_name: str
    num_classes: int = 1000
    dropout_rate: float = 0.5
    fc_width: int = 4096
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    tower_axis: str | None = None
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        min_size = min_input_size([(k, s, p) for _, k, s, p, _, _ in self.convs], self.ceil_mode)
        x = check_images(x, model=self.arch_name, min_size=min_size).astype(self.dtype)
        split = self._tower_split()   # 1 on one device; the towers' count when each device holds one
        feats: dict = {}
        w_init = nn.initializers.normal(0.01)
        lrn = functools.partial(local_response_norm, size=5, alpha=1e-4, beta=0.75, k=2.0,
                                groups=self.towers // split)
        pool = functools.partial(max_pool, kernel=3, stride=2, ceil_mode=self.ceil_mode)
        for i, (n, k, s, p, g, b) in enumerate(self.convs, start=1):
            if split > 1 and g == 1 and i > 1:  # conv3: every kernel sees both towers' maps
                x = lax.all_gather(x, self.tower_axis, axis=3, tiled=True)
            x = conv(n // split, k, stride=s, padding=p, groups=g if split == 1 else 1, name=f"conv{i}",
                     dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=w_init,
                     bias_init=nn.initializers.constant(b))(x)
            x = feats[f"conv{i}"] = nn.relu(x)
            if i <= 2 and self.norm_before_pool:
                x = feats[f"norm{i}"] = lrn(x)
                x = feats[f"pool{i}"] = pool(x)
            elif i <= 2:
                x = feats[f"pool{i}"] = pool(x)
                x = feats[f"norm{i}"] = lrn(x)
        x = feats["pool5"] = max_pool(x, 3, 2)
        # torch's (C, H, W) flatten: a tower's channels are a contiguous half of the vector
        x = flatten_chw(adaptive_avg_pool(x, 6))

        def dense(n, name, bias):
            return linear(n, name=name, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=w_init,
                          bias_init=nn.initializers.constant(bias))

        def drop(name):
            return _Dropout(self.dropout_rate, deterministic=not train, tower_axis=self.tower_axis if split > 1
                            else None, batch_axis=self.batch_axis, name=name)

        x = self._gather(x, split)   # fc6 sees both towers
        x = feats["fc6"] = nn.relu(dense(self.fc_width // split, "fc6", self.fc_bias)(x))
        # explicit names: the masks follow from the dropout key and the module path, the same in both modes
        x = self._gather(drop("Dropout_0")(x), split)   # fc7 sees both towers
        x = feats["fc7"] = nn.relu(dense(self.fc_width // split, "fc7", self.fc_bias)(x))
        x = feats["pre_logits"] = drop("Dropout_1")(x)
        if split > 1:  # fc8 combines the towers: each holds its rows of the kernel, the partial logits add up
            logits = _TowerSumDense(self.num_classes, self.tower_axis, w_init, self.dtype, self.param_dtype,
                                    name="fc8")(x)
        else:
            logits = dense(self.num_classes, "fc8", 0.0)(x)
        return logits.astype(jnp.float32), feats

    def _tower_split(self) -> int:
        if self.tower_axis is None:
            return 1
        size = lax.axis_size(self.tower_axis)
        if self.towers < 2 or size != self.towers:
            raise ValueError(f"{self.arch_name} has {self.towers} tower(s); tower_axis {self.tower_axis!r} "
                             f"has size {size}")
        return size

    def _gather(self, x: jax.Array, split: int) -> jax.Array:
        return lax.all_gather(x, self.tower_axis, axis=x.ndim - 1, tiled=True) if split > 1 else x


class _Dropout(nn.Module):
    """``nn.Dropout`` (the same mask for the same key and module path) that can keep a device's block.

    With ``tower_axis`` / ``batch_axis`` (under ``jax.shard_map``) the input is this device's block of
    the whole (batch, units) array, units split over ``tower_axis`` and examples over ``batch_axis``:
    the mask of the whole array is drawn, as on one device, and the device's block of it kept.
    """

    rate: float
    deterministic: bool
    tower_axis: str | None = None
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        if self.tower_axis is None and self.batch_axis is None:
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
        else:
            index, whole = [], []
            for axis, size in zip((self.batch_axis, self.tower_axis), x.shape):
                k = 1 if axis is None else lax.axis_size(axis)
                index.append(0 if axis is None else lax.axis_index(axis) * size)
                whole.append(k * size)
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, tuple(whole))
            mask = lax.dynamic_slice(mask, index, x.shape)
        return lax.select(mask, x / keep, jnp.zeros_like(x))


class _TowerSumDense(nn.Module):
    """fc8 across towers: this tower's rows of the kernel times its half of the input, summed over
    ``axis``, plus the (whole) bias. Parameters ``kernel`` (in / towers, features) and ``bias`` (features,)."""

    features: int
    axis: str
    kernel_init: Callable
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        partial_logits = x @ kernel.astype(self.dtype)
        return lax.psum(partial_logits, self.axis) + bias.astype(self.dtype)


_PAPER_NETS = {
    # convs: (kernels, size, stride, padding, groups, bias init) of conv1..conv5
    "alexnet_twotower": dict(
        arch_name="AlexNetTwoTower", towers=2, norm_before_pool=True, ceil_mode=False, fc_bias=1.0,
        convs=((96, 11, 4, 2, 1, 0.0), (256, 5, 1, 2, 2, 1.0), (384, 3, 1, 1, 1, 0.0), (384, 3, 1, 1, 2, 1.0),
               (256, 3, 1, 1, 2, 1.0))),
    "zfnet": dict(
        arch_name="ZFNet", towers=1, norm_before_pool=False, ceil_mode=True, fc_bias=0.0,
        convs=((96, 7, 2, 1, 1, 0.0), (256, 5, 2, 0, 1, 0.0), (384, 3, 1, 1, 1, 0.0), (384, 3, 1, 1, 1, 0.0),
               (256, 3, 1, 1, 1, 0.0))),
}

register("alexnet", AlexNet, family="alexnet", resolution=224, torchvision="alexnet")
for _name, _row in _PAPER_NETS.items():
    register(_name, functools.partial(PaperAlexNet, **_row), family="alexnet", resolution=224)
