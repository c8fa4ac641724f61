"""Inception-v3 (Szegedy et al. 2015), torchvision's ``Inception3``.

Every convolution is a ``BasicConv2d`` (conv without bias, BatchNorm with
eps 0.001, ReLU). After a stem of unpadded convolutions come three grids of
mixed blocks: ``InceptionA`` (35x35, 5x5 and double 3x3 branches),
``InceptionB`` (grid reduction to 17x17), ``InceptionC`` (17x17, factorized
1x7 / 7x1 branches), ``InceptionD`` (reduction to 8x8) and ``InceptionE``
(8x8, split 1x3 / 3x1 branches). The pooling branches use 3x3/1 average
pools that count the zero padding (torch's default), the reductions 3x3/2
max pools.

The auxiliary classifier ``AuxLogits`` (5x5/3 average pool, 1x1 conv to
128, 5x5 conv to 768, global average pool, fc) reads ``Mixed_6e``. It runs
in training (its logits are returned as a feature) and during
initialisation (so its parameters exist); in evaluation it costs nothing.
Its 5x5 convolution needs a 17x17 ``Mixed_6e``, i.e. inputs of at least
299x299: training smaller images needs ``aux_logits=False`` (torchvision
fails there too).

torchvision's pretrained weights expect inputs normalized as
``(x - 0.5) / 0.5``; ``transform_input=True`` (set by ``load_pretrained``)
converts the usual ImageNet-normalized input first.

Features (NHWC unless noted; spatial size for a 299x299 input, channels):
  ``Conv2d_1a_3x3``     149, 32 (3x3/2)
  ``Conv2d_2a_3x3``     147, 32
  ``Conv2d_2b_3x3``     147, 64
  ``maxpool1``          73, 64 (3x3/2)
  ``Conv2d_3b_1x1``     73, 80
  ``Conv2d_4a_3x3``     71, 192
  ``maxpool2``          35, 192 (3x3/2)
  ``Mixed_5b`` .. 5d    35, 256 / 288 / 288
  ``Mixed_6a`` .. 6e    17, 768
  ``Mixed_7a`` .. 7c    8, 1280 / 2048 / 2048
  ``pre_logits``        (N, 2048) global average pool
  ``aux``               (N, num_classes) float32 auxiliary logits (training only)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import dense as linear
from jaxcnn.layers import avg_pool, check_images, max_pool
from jaxcnn.models.googlenet import BasicConv2d, linear_bias, transform_input, trunc_normal
from jaxcnn.models.registry import register

Dtype = Any


def _pool_branch(x):
    return avg_pool(x, 3, 1, 1, count_include_pad=True)


class InceptionA(nn.Module):
    """35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""

    pool_features: int
    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.conv_block
        b1 = c(64, 1, name="branch1x1")(x, train)
        b5 = c(48, 1, name="branch5x5_1")(x, train)
        b5 = c(64, 5, padding=2, name="branch5x5_2")(b5, train)
        b3 = c(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = c(96, 3, padding=1, name="branch3x3dbl_2")(b3, train)
        b3 = c(96, 3, padding=1, name="branch3x3dbl_3")(b3, train)
        bp = c(self.pool_features, 1, name="branch_pool")(_pool_branch(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | 3x3/2 max pool."""

    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.conv_block
        b3 = c(384, 3, stride=2, name="branch3x3")(x, train)
        bd = c(64, 1, name="branch3x3dbl_1")(x, train)
        bd = c(96, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = c(96, 3, stride=2, name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
    """17x17: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1."""

    channels_7x7: int
    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c, c7 = self.conv_block, self.channels_7x7
        b1 = c(192, 1, name="branch1x1")(x, train)
        b7 = c(c7, 1, name="branch7x7_1")(x, train)
        b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7, train)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7, train)
        bd = c(c7, 1, name="branch7x7dbl_1")(x, train)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd, train)
        bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd, train)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd, train)
        bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd, train)
        bp = c(192, 1, name="branch_pool")(_pool_branch(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | 3x3/2 max pool."""

    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.conv_block
        b3 = c(192, 1, name="branch3x3_1")(x, train)
        b3 = c(320, 3, stride=2, name="branch3x3_2")(b3, train)
        b7 = c(192, 1, name="branch7x7x3_1")(x, train)
        b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7, train)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7, train)
        b7 = c(192, 3, stride=2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8: 1x1 | 1x1-[1x3, 3x1] | 1x1-3x3-[1x3, 3x1] | avg pool-1x1."""

    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool):
        c = self.conv_block
        b1 = c(320, 1, name="branch1x1")(x, train)
        b3 = c(384, 1, name="branch3x3_1")(x, train)
        b3 = [c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3, train),
              c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3, train)]
        bd = c(448, 1, name="branch3x3dbl_1")(x, train)
        bd = c(384, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = [c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd, train),
              c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd, train)]
        bp = c(192, 1, name="branch_pool")(_pool_branch(x), train)
        return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """5x5/3 avg pool, 1x1 conv to 128, 5x5 conv to 768, global average pool, fc; float32 logits."""

    num_classes: int
    conv_block: Callable[..., nn.Module]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # the smallest input map: the 5x5/3 pool must leave 5x5 for the 5x5 convolution
    MIN_SIZE = 17

    @nn.compact
    def __call__(self, x, train: bool):
        x = self.conv_block(128, 1, name="conv0")(avg_pool(x, 5, 3), train)
        x = self.conv_block(768, 5, stddev=0.01, name="conv1")(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc",
                     kernel_init=trunc_normal(0.001), bias_init=linear_bias(768))(x)
        return x.astype(jnp.float32)


# torchvision's mixed blocks: name -> (block, its options)
_MIXED = (
    ("Mixed_5b", InceptionA, {"pool_features": 32}),
    ("Mixed_5c", InceptionA, {"pool_features": 64}),
    ("Mixed_5d", InceptionA, {"pool_features": 64}),
    ("Mixed_6a", InceptionB, {}),
    ("Mixed_6b", InceptionC, {"channels_7x7": 128}),
    ("Mixed_6c", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6d", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6e", InceptionC, {"channels_7x7": 192}),
    ("Mixed_7a", InceptionD, {}),
    ("Mixed_7b", InceptionE, {}),
    ("Mixed_7c", InceptionE, {}),
)


class Inception3(nn.Module):
    """Inception-v3 with its auxiliary classifier, as torchvision builds it.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images, H, W >= 75
    (>= 299 in training with ``aux_logits``) ->
    ``(logits (N, num_classes) float32, features)``; in training with
    ``aux_logits`` the features hold ``aux`` too.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.5
    aux_logits: bool = True
    transform_input: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    # the smallest input for which Mixed_7a's 3x3/2 reductions still see 3x3 (torchvision's min_size)
    MIN_SIZE = 75
    # the smallest input for which Mixed_6e is 17x17, as AuxLogits needs
    MIN_SIZE_AUX = 299

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=self.MIN_SIZE)
        if train and self.aux_logits and min(x.shape[1:3]) < self.MIN_SIZE_AUX:
            raise ValueError(
                f"{type(self).__name__}: the auxiliary classifier needs images of at least {self.MIN_SIZE_AUX}x"
                f"{self.MIN_SIZE_AUX} pixels in training; got {x.shape[1]}x{x.shape[2]} (pass aux_logits=False)")
        if self.transform_input:
            x = transform_input(x)
        x = x.astype(self.dtype)
        c = functools.partial(BasicConv2d, stddev=0.1, dtype=self.dtype, param_dtype=self.param_dtype,
                              bn_axis_name=self.bn_axis_name)
        feats = {}
        x = feats["Conv2d_1a_3x3"] = c(32, 3, stride=2, name="Conv2d_1a_3x3")(x, train)
        x = feats["Conv2d_2a_3x3"] = c(32, 3, name="Conv2d_2a_3x3")(x, train)
        x = feats["Conv2d_2b_3x3"] = c(64, 3, padding=1, name="Conv2d_2b_3x3")(x, train)
        x = feats["maxpool1"] = max_pool(x, 3, 2)
        x = feats["Conv2d_3b_1x1"] = c(80, 1, name="Conv2d_3b_1x1")(x, train)
        x = feats["Conv2d_4a_3x3"] = c(192, 3, name="Conv2d_4a_3x3")(x, train)
        x = feats["maxpool2"] = max_pool(x, 3, 2)
        for name, block, options in _MIXED:
            x = feats[name] = block(**options, conv_block=c, name=name)(x, train)
            if name == "Mixed_6e" and self.aux_logits and (train or self.is_initializing()):
                aux_in = x
                if min(x.shape[1:3]) < InceptionAux.MIN_SIZE:  # eval-mode init below 299 px: the
                    # parameters do not depend on the input size, so create them on a placeholder
                    aux_in = jnp.zeros((x.shape[0], InceptionAux.MIN_SIZE, InceptionAux.MIN_SIZE, x.shape[3]),
                                       x.dtype)
                aux = InceptionAux(self.num_classes, conv_block=c, dtype=self.dtype, param_dtype=self.param_dtype,
                                   name="AuxLogits")(aux_in, train)
                if train:
                    feats["aux"] = aux
        x = feats["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc",
                          kernel_init=trunc_normal(0.1), bias_init=linear_bias(2048))(x)
        return logits.astype(jnp.float32), feats


register("inception_v3", Inception3, family="inception_v3", resolution=299, torchvision="inception_v3",
         pretrained_options={"transform_input": True})
