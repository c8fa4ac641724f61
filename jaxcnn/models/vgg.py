"""VGG-11/13/16/19 (Simonyan & Zisserman 2014), with and without batch norm, torchvision's layout.

A variant is a row of ``CFGS``: output channels of each 3x3 convolution
(padding 1), ``"M"`` for a 2x2/2 max pool; ``batch_norm`` puts a BatchNorm
after every convolution (torchvision's ``vgg*_bn``, convolutions keep their
bias). The classifier reads a 7x7 adaptive average pool flattened in torch's
(C, H, W) order: Linear 25088 -> 4096, ReLU, Dropout, Linear 4096 -> 4096,
ReLU, Dropout, Linear -> classes. Module names are torchvision's
(``features.0``, ``features.1`` for the first BN, ``classifier.0/3/6``).
Initialisation as torchvision: convolutions Kaiming-normal (fan out), linear
layers N(0, 0.01), biases 0, BN scale 1 and shift 0.

Features (Caffe naming; a conv name is its post-ReLU activation):
  ``conv{b}_{i}``  i-th convolution of block b (VGG-19: conv1_1 ... conv5_4), stride 2**(b-1)
  ``pool{b}``      max pool closing block b (b = 1..5), stride 2**b
  ``fc6``, ``fc7`` post-ReLU fully connected activations (N, 4096)
  ``pre_logits``   (N, 4096) the input of the last Linear (fc7 after dropout)
Gatys et al.'s style transfer reads conv1_1, conv2_1, conv3_1, conv4_1, conv5_1
(style) and conv4_2 (content). Minimum input 32x32 (five 2x2 pools).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import dense as linear
from jaxcnn.layers import adaptive_avg_pool, batch_norm, check_images, conv, flatten_chw, kaiming_fan_out, max_pool
from jaxcnn.models.registry import register

Dtype = Any

CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
linear_init = nn.initializers.normal(0.01)  # torchvision's VGG Linear init (the FCN's fc6/fc7 reuse it)


def vgg_features(x, cfg: Sequence, feats: dict, *, train: bool, use_bn: bool, dtype: Dtype, param_dtype: Dtype,
                 bn_axis_name: str | None = None, ceil_mode: bool = False):
    """torchvision's ``features`` (convolutions and pools), writing ``conv{b}_{i}``/``pool{b}`` into ``feats``.

    Call it inside a compact module: it creates that module's ``features.N``
    submodules. ``ceil_mode`` runs the pools in ceil mode (the FCN backbone,
    where map b has size ceil(H / 2**b)); the weights do not depend on it.
    """
    idx, block, i = 0, 1, 1
    for v in cfg:
        if v == "M":
            x = feats[f"pool{block}"] = max_pool(x, 2, 2, ceil_mode=ceil_mode)
            idx, block, i = idx + 1, block + 1, 1
            continue
        x = conv(v, 3, padding=1, name=f"features.{idx}", dtype=dtype, param_dtype=param_dtype,
                 kernel_init=kaiming_fan_out, bias_init=nn.initializers.zeros)(x)
        if use_bn:
            x = batch_norm(train, name=f"features.{idx + 1}", param_dtype=param_dtype, axis_name=bn_axis_name)(x)
        x = feats[f"conv{block}_{i}"] = nn.relu(x).astype(dtype)
        idx, i = idx + (3 if use_bn else 2), i + 1
    return x


class VGG(nn.Module):
    """VGG family; a variant is a ``cfg`` row and ``batch_norm``.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images, H, W >= 32
    -> ``(logits (N, num_classes) float32, features)``.
    """

    cfg: Sequence
    batch_norm: bool = False
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=32).astype(self.dtype)
        feats: dict = {}
        x = vgg_features(x, self.cfg, feats, train=train, use_bn=self.batch_norm, dtype=self.dtype,
                         param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name)
        x = flatten_chw(adaptive_avg_pool(x, 7))
        dense = functools.partial(linear, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=linear_init,
                                  bias_init=nn.initializers.zeros)
        dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = feats["fc6"] = nn.relu(dense(4096, name="classifier.0")(x))
        x = feats["fc7"] = nn.relu(dense(4096, name="classifier.3")(dropout()(x)))
        x = feats["pre_logits"] = dropout()(x)
        logits = dense(self.num_classes, name="classifier.6")(x)
        return logits.astype(jnp.float32), feats


for _name, _cfg in CFGS.items():
    for _bn in (False, True):
        _full = _name + ("_bn" if _bn else "")
        register(_full, functools.partial(VGG, cfg=_cfg, batch_norm=_bn), family="vgg", torchvision=_full)
