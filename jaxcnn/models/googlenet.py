"""GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision's version.

Every convolution is a ``BasicConv2d`` (conv without bias, BatchNorm with
eps 0.001, ReLU): the batch-normalized variant whose weights torchvision
ported from Google's, not the paper's LRN network. An Inception module
concatenates four branches on channels: 1x1 | 1x1-3x3 | 1x1-3x3 |
3x3/1 max pool-1x1. The third branch has a 5x5 convolution in the paper;
torchvision's has a 3x3 one (pytorch/vision#906), and so has this module,
because that is what torchvision's weights are. Max pools run in ceil mode.

Two auxiliary classifiers (4x4 adaptive average pool, 1x1 conv to 128,
fc 2048->1024, ReLU, dropout 0.7, fc) read ``inception4a`` and
``inception4d``. They run in training (their logits are returned as
features) and during initialisation (so their parameters exist); in
evaluation they cost nothing. ``aux_logits=False`` drops them.

torchvision's pretrained weights expect inputs normalized as
``(x - 0.5) / 0.5``; ``transform_input=True`` (set by ``load_pretrained``)
converts the usual ImageNet-normalized input first.

Features (NHWC unless noted; strides w.r.t. the input):
  ``conv1``                   7x7/2 conv, stride 2, 64 channels
  ``maxpool1``                3x3/2 max pool, stride 4
  ``conv2``, ``conv3``        1x1 and 3x3 convs, stride 4, 64 / 192 channels
  ``maxpool2``                stride 8
  ``inception3a``, ``3b``     stride 8, 256 / 480 channels
  ``maxpool3``                stride 16
  ``inception4a`` .. ``4e``   stride 16, 512 / 512 / 512 / 528 / 832 channels
  ``maxpool4``                2x2/2 max pool, stride 32
  ``inception5a``, ``5b``     stride 32, 832 / 1024 channels
  ``pre_logits``              (N, 1024) global average pool
  ``aux1``, ``aux2``          (N, num_classes) float32 auxiliary logits (training only)
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.imagenet import MEAN, STD
from jaxcnn.layers import dense as linear
from jaxcnn.layers import adaptive_avg_pool, batch_norm, check_images, conv, flatten_chw, max_pool
from jaxcnn.models.registry import register

Dtype = Any


def trunc_normal(stddev: float, lower: float = -2.0, upper: float = 2.0) -> Callable:
    """``torch.nn.init.trunc_normal_(std=stddev, a=lower, b=upper)``: the bounds are values, not stddevs.

    (``jax.nn.initializers.truncated_normal`` takes bounds in stddevs and rescales the variance.)
    """

    def init(key, shape, dtype=jnp.float32):
        x = jax.random.truncated_normal(key, lower / stddev, upper / stddev, shape, jnp.float32)
        return (x * stddev).astype(dtype)

    return init


def linear_bias(fan_in: int) -> Callable:
    """torch's default ``nn.Linear`` bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


# ImageNet normalization -> (x - 0.5) / 0.5, per channel: x * std / 0.5 + (mean - 0.5) / 0.5
_TRANSFORM_SCALE = (np.asarray(STD) / 0.5).astype(np.float32)
_TRANSFORM_SHIFT = ((np.asarray(MEAN) - 0.5) / 0.5).astype(np.float32)


def transform_input(x: jax.Array) -> jax.Array:
    """torchvision's ``_transform_input``: ImageNet-normalized NHWC input -> ``(pixels - 0.5) / 0.5``."""
    return x * _TRANSFORM_SCALE + _TRANSFORM_SHIFT


class BasicConv2d(nn.Module):
    """conv (no bias) + BatchNorm (eps 0.001) + ReLU; truncated-normal kernel init with ``stddev``."""

    features: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    stddev: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = conv(self.features, self.kernel, stride=self.stride, padding=self.padding, bias=False, name="conv",
                 dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=trunc_normal(self.stddev))(x)
        x = batch_norm(train, name="bn", eps=1e-3, param_dtype=self.param_dtype, axis_name=self.bn_axis_name)(x)
        return nn.relu(x).astype(self.dtype)


class Inception(nn.Module):
    """1x1 | 1x1-3x3 | 1x1-3x3 (the paper's 5x5, see above) | 3x3/1 max pool-1x1, concatenated."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.conv_block
        b1 = c(self.ch1x1, 1, name="branch1")(x, train)
        b2 = c(self.ch3x3, 3, padding=1, name="branch2.1")(c(self.ch3x3red, 1, name="branch2.0")(x, train), train)
        b3 = c(self.ch5x5, 3, padding=1, name="branch3.1")(c(self.ch5x5red, 1, name="branch3.0")(x, train), train)
        b4 = c(self.pool_proj, 1, name="branch4.1")(max_pool(x, 3, 1, 1, ceil_mode=True), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """4x4 adaptive average pool, 1x1 conv to 128, fc 2048->1024, ReLU, dropout, fc; float32 logits."""

    num_classes: int
    dropout_rate: float
    conv_block: Callable[..., nn.Module]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dense = functools.partial(linear, dtype=self.dtype, param_dtype=self.param_dtype,
                                  kernel_init=trunc_normal(0.01))
        x = self.conv_block(128, 1, name="conv")(adaptive_avg_pool(x, 4), train)
        x = nn.relu(dense(1024, name="fc1", bias_init=linear_bias(2048))(flatten_chw(x)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="fc2", bias_init=linear_bias(1024))(x).astype(jnp.float32)


# torchvision's table: name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), or a max pool's kernel
_LAYOUT = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", 3),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", 2),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
_AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNet(nn.Module):
    """GoogLeNet with batch norm and auxiliary classifiers, as torchvision builds it.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images, H, W >= 15 ->
    ``(logits (N, num_classes) float32, features)``; in training with
    ``aux_logits`` the features hold ``aux1`` and ``aux2`` too.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    aux_logits: bool = True
    transform_input: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    # the smallest input for which maxpool3 still has a row to pool (torchvision's min_size)
    MIN_SIZE = 15

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=self.MIN_SIZE)
        if self.transform_input:
            x = transform_input(x)
        x = x.astype(self.dtype)
        c = functools.partial(BasicConv2d, stddev=0.01, dtype=self.dtype, param_dtype=self.param_dtype,
                              bn_axis_name=self.bn_axis_name)
        run_aux = self.aux_logits and (train or self.is_initializing())
        feats = {}
        x = feats["conv1"] = c(64, 7, stride=2, padding=3, name="conv1")(x, train)
        x = feats["maxpool1"] = max_pool(x, 3, 2, ceil_mode=True)
        x = feats["conv2"] = c(64, 1, name="conv2")(x, train)
        x = feats["conv3"] = c(192, 3, padding=1, name="conv3")(x, train)
        x = feats["maxpool2"] = max_pool(x, 3, 2, ceil_mode=True)
        for name, spec in _LAYOUT:
            if name.startswith("maxpool"):
                x = feats[name] = max_pool(x, spec, 2, ceil_mode=True)
                continue
            x = feats[name] = Inception(*spec, conv_block=c, name=name)(x, train)
            if name in _AUX_AFTER and run_aux:
                aux_name = _AUX_AFTER[name]
                aux = InceptionAux(self.num_classes, self.aux_dropout_rate, conv_block=c, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=aux_name)(x, train)
                if train:
                    feats[aux_name] = aux
        x = feats["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc",
                          kernel_init=trunc_normal(0.01), bias_init=linear_bias(1024))(x)
        return logits.astype(jnp.float32), feats


register("googlenet", GoogLeNet, family="googlenet", resolution=224, torchvision="googlenet",
         pretrained_options={"transform_input": True})
