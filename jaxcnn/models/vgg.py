"""VGG-11/13/16/19 (Simonyan & Zisserman 2014), with and without batch norm, torchvision's layout.

A variant is a row of ``CFGS``: output channels of each 3x3 convolution
(padding 1), ``"M"`` for a 2x2/2 max pool. The classifier reads a 7x7
adaptive average pool flattened in torch's (C, H, W) order: Linear 25088 ->
4096, ReLU, Dropout, Linear 4096 -> 4096, ReLU, Dropout, Linear -> classes.
Module names are torchvision's (``features.0``, ``classifier.3``).

Features (Caffe naming; a conv name is its post-ReLU activation):
  ``conv{b}_{i}``  i-th convolution of block b (VGG-19: conv1_1 ... conv5_4), stride 2**(b-1)
  ``pool{b}``      max pool closing block b, stride 2**b
  ``fc6``, ``fc7`` post-ReLU fully connected activations (N, 4096)
  ``pre_logits``   the input of the last Linear (fc7 after dropout)
Gatys style transfer reads conv1_1, conv2_1, conv3_1, conv4_1, conv4_2, conv5_1.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import adaptive_avg_pool, batch_norm, check_images, conv, flatten_chw, kaiming_fan_out, max_pool
from jaxcnn.registry import register

Dtype = Any

CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
_linear_init = nn.initializers.normal(0.01)


def vgg_features(x, cfg: Sequence, *, train: bool, batch_norm_: bool, dtype: Dtype, param_dtype: Dtype,
                 bn_axis_name: str | None, feats: dict, ceil_mode: bool = False, stop_after: int | None = None):
    """The convolutional part (torchvision's ``features``), writing activations into ``feats``.

    Must be called inside a compact module: creates ``features.N`` submodules.
    ``ceil_mode`` pools in ceil mode (the FCN backbone); ``stop_after`` stops
    after that many pools.
    """
    idx, block, i = 0, 1, 1
    for v in cfg:
        if v == "M":
            x = feats[f"pool{block}"] = max_pool(x, 2, 2, ceil_mode=ceil_mode)
            idx, block, i = idx + 1, block + 1, 1
            if stop_after is not None and block > stop_after:
                break
            continue
        x = conv(v, 3, padding=1, name=f"features.{idx}", dtype=dtype, param_dtype=param_dtype,
                 kernel_init=kaiming_fan_out, bias_init=nn.initializers.zeros)(x)
        if batch_norm_:
            x = batch_norm(train, name=f"features.{idx + 1}", param_dtype=param_dtype, axis_name=bn_axis_name)(x)
        x = feats[f"conv{block}_{i}"] = nn.relu(x).astype(dtype)
        idx += 3 if batch_norm_ else 2
        i += 1
    return x


class VGG(nn.Module):
    """VGG family. ``__call__(x, train=False)``: (N, H, W, 3), H, W >= 32 -> (logits, features)."""

    cfg: Sequence
    batch_norm: bool = False
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="VGG", min_size=32).astype(self.dtype)
        feats: dict = {}
        x = vgg_features(x, self.cfg, train=train, batch_norm_=self.batch_norm, dtype=self.dtype,
                         param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name, feats=feats)
        x = flatten_chw(adaptive_avg_pool(x, 7))
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_linear_init)
        x = feats["fc6"] = nn.relu(dense(4096, name="classifier.0")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = feats["fc7"] = nn.relu(dense(4096, name="classifier.3")(x))
        x = feats["pre_logits"] = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = dense(self.num_classes, name="classifier.6")(x)
        return logits.astype(jnp.float32), feats


for _name, _cfg in CFGS.items():
    for _bn in (False, True):
        _full = _name + ("_bn" if _bn else "")
        register(_full, functools.partial(VGG, cfg=_cfg, batch_norm=_bn), family="vgg", torchvision=_full)
