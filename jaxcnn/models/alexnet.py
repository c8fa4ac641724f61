"""AlexNet: torchvision's single tower, the original two-tower net, and ZFNet.

``alexnet``: torchvision's variant (64-192-384-256-256 kernels, no LRN);
module names are torchvision's (``features.0`` ... ``classifier.6``), init is
torch's default (kaiming-uniform a=sqrt(5)).

``alexnet_twotower``: Krizhevsky, Sutskever & Hinton 2012 as published:
96-256-384-384-256 kernels, 11x11 stride-4 stem (padding 2, so 224 px gives
55x55), local response normalization (k=2, n=5, alpha=1e-4, beta=0.75, the
paper's convention) after the ReLUs of the first two layers, overlapping 3x3/2
max pools, fc 4096-4096 with dropout on their outputs. The two GPUs' towers
are channel halves: in every grouped layer the first half of the output
channels is tower A and the second half tower B. conv2, conv4 and conv5 are
grouped convolutions (groups=2: a tower sees only its own half), LRN runs
within a tower, conv3 and the fully connected layers see both towers.
Initialisation as in the paper: weights N(0, 0.01), biases 1 in conv2, conv4,
conv5, fc6 and fc7, 0 elsewhere. 60,965,224 parameters.

``zfnet``: Zeiler & Fergus 2013: a 7x7 stride-2 first layer (96 kernels,
padding 1), a 5x5 stride-2 second layer, ceil-mode 3x3/2 pools followed by
contrast normalization (LRN, one tower), conv3-5 384-384-256; maps
110-55-26-13-13-13-13-6 at 224 px. Init as in the paper: weights N(0, 0.01),
biases 0.

Features (Caffe naming; a conv name is its post-ReLU activation, NHWC):
  ``conv1``..``conv5``  post-ReLU convolutions (strides 4, 8, 16, 16, 16;
                        ZFNet 2, 4, 8, 8, 8 before pooling)
  ``pool1``, ``pool2``, ``pool5``  max pools (strides 8, 16, 32)
  ``norm1``, ``norm2``  LRN outputs (two-tower and ZFNet only)
  ``fc6``, ``fc7``      post-ReLU fully connected, (N, 4096)
  ``pre_logits``        the input of the last layer, (N, 4096): fc7 in
                        torchvision's net, fc7 after dropout in the papers'
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import (adaptive_avg_pool, check_images, conv, flatten_chw, kaiming_uniform_a_sqrt5,
                           local_response_norm, max_pool)
from jaxcnn.registry import register

Dtype = Any

MIN_SIZE = 63  # the smallest input whose pool5 is non-empty (all three nets)


class AlexNet(nn.Module):
    """torchvision's AlexNet. ``__call__(x, train=False)``: (N, H, W, 3), H, W >= 63 -> (logits, features)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="AlexNet", min_size=MIN_SIZE).astype(self.dtype)
        feats: dict = {}
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=kaiming_uniform_a_sqrt5)
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                                  kernel_init=kaiming_uniform_a_sqrt5)
        drop = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = feats["conv1"] = nn.relu(c(64, 11, stride=4, padding=2, name="features.0")(x))
        x = feats["pool1"] = max_pool(x, 3, 2)
        x = feats["conv2"] = nn.relu(c(192, 5, padding=2, name="features.3")(x))
        x = feats["pool2"] = max_pool(x, 3, 2)
        x = feats["conv3"] = nn.relu(c(384, 3, padding=1, name="features.6")(x))
        x = feats["conv4"] = nn.relu(c(256, 3, padding=1, name="features.8")(x))
        x = feats["conv5"] = nn.relu(c(256, 3, padding=1, name="features.10")(x))
        x = feats["pool5"] = max_pool(x, 3, 2)
        x = flatten_chw(adaptive_avg_pool(x, 6))
        x = feats["fc6"] = nn.relu(dense(4096, name="classifier.1")(drop()(x)))
        x = feats["fc7"] = nn.relu(dense(4096, name="classifier.4")(drop()(x)))
        feats["pre_logits"] = x
        logits = dense(self.num_classes, name="classifier.6")(x)
        return logits.astype(jnp.float32), feats


class CaffeAlexNet(nn.Module):
    """The papers' nets: two-tower AlexNet (``zf=False``) or ZFNet (``zf=True``).

    ``__call__(x, train=False)``: (N, H, W, 3), H, W >= 63 -> (logits, features).
    """

    zf: bool = False
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="ZFNet" if self.zf else "AlexNetTwoTower", min_size=MIN_SIZE)
        x = x.astype(self.dtype)
        feats: dict = {}
        w_init = nn.initializers.normal(0.01)
        one = 0.0 if self.zf else 1.0  # the two-tower net's bias 1 layers; ZFNet starts all biases at 0

        def c(n, k, name, bias=0.0, **kw):
            return conv(n, k, name=name, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=w_init,
                        bias_init=nn.initializers.constant(bias), **kw)

        def dense(n, name, bias=0.0):
            return nn.Dense(n, name=name, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=w_init,
                            bias_init=nn.initializers.constant(bias))

        towers = 1 if self.zf else 2
        lrn = functools.partial(local_response_norm, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=towers)
        if self.zf:
            x = feats["conv1"] = nn.relu(c(96, 7, "conv1", stride=2, padding=1)(x))
            x = feats["pool1"] = max_pool(x, 3, 2, ceil_mode=True)
            x = feats["norm1"] = lrn(x)
            x = feats["conv2"] = nn.relu(c(256, 5, "conv2", stride=2)(x))
            x = feats["pool2"] = max_pool(x, 3, 2, ceil_mode=True)
            x = feats["norm2"] = lrn(x)
        else:
            x = feats["conv1"] = nn.relu(c(96, 11, "conv1", stride=4, padding=2)(x))
            x = feats["norm1"] = lrn(x)
            x = feats["pool1"] = max_pool(x, 3, 2)
            x = feats["conv2"] = nn.relu(c(256, 5, "conv2", bias=one, padding=2, groups=towers)(x))
            x = feats["norm2"] = lrn(x)
            x = feats["pool2"] = max_pool(x, 3, 2)
        x = feats["conv3"] = nn.relu(c(384, 3, "conv3", padding=1)(x))
        x = feats["conv4"] = nn.relu(c(384, 3, "conv4", bias=one, padding=1, groups=towers)(x))
        x = feats["conv5"] = nn.relu(c(256, 3, "conv5", bias=one, padding=1, groups=towers)(x))
        x = feats["pool5"] = max_pool(x, 3, 2)
        x = flatten_chw(adaptive_avg_pool(x, 6))
        x = feats["fc6"] = nn.relu(dense(4096, "fc6", bias=one)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = feats["fc7"] = nn.relu(dense(4096, "fc7", bias=one)(x))
        x = feats["pre_logits"] = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = dense(self.num_classes, "fc8")(x)
        return logits.astype(jnp.float32), feats


register("alexnet", AlexNet, family="alexnet", resolution=224, torchvision="alexnet")
register("alexnet_twotower", functools.partial(CaffeAlexNet, zf=False), family="alexnet", resolution=224)
register("zfnet", functools.partial(CaffeAlexNet, zf=True), family="alexnet", resolution=224)
