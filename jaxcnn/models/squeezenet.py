"""SqueezeNet (Iandola et al. 2016), torchvision's versions 1.0 and 1.1.

A Fire module squeezes with a 1x1 convolution and expands with parallel 1x1
and 3x3 convolutions whose (ReLU'd) outputs are concatenated on channels.
Max pools are 3x3/2 in ceil mode. The classifier is a 1x1 convolution to
``num_classes`` channels ("conv10") followed by ReLU and global average
pooling, so there is no pre-logits vector: the last feature is the class map.
Version 1.1 uses a 3x3 stem and pools earlier (2.4x fewer FLOPs, same
accuracy); the versions differ only in their layer table.

Features (NHWC; strides for version 1.0 / 1.1):
  ``conv1``       stem convolution after ReLU, stride 2
  ``maxpool1``    first max pool, stride 4
  ``fireN``       output of Fire module N (N = 2..9, the paper's numbering)
  ``maxpoolN``    max pool after layer N: 1.0 ``maxpool4``, ``maxpool8``
                  (strides 8, 16); 1.1 ``maxpool3``, ``maxpool5`` (strides 8, 16)
  ``conv10``      (N, h, w, num_classes) class map after ReLU, stride 16;
                  the logits are its spatial mean
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import check_images, conv, max_pool
from jaxcnn.models.registry import register

Dtype = Any

# torch.nn.init.kaiming_uniform_ with its defaults (a=0, fan_in): U(+-sqrt(6 / fan_in))
kaiming_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")


class Fire(nn.Module):
    """squeeze 1x1 + ReLU, then [expand1x1 + ReLU, expand3x3 + ReLU] concatenated."""

    squeeze: int
    expand1x1: int
    expand3x3: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=kaiming_uniform)
        x = nn.relu(c(self.squeeze, 1, name="squeeze")(x))
        return jnp.concatenate([nn.relu(c(self.expand1x1, 1, name="expand1x1")(x)),
                                nn.relu(c(self.expand3x3, 3, padding=1, name="expand3x3")(x))], axis=-1)


class SqueezeNet(nn.Module):
    """SqueezeNet; a version is its ``layers`` table (see ``_VERSIONS``).

    ``layers``: torchvision's ``features`` after the stem (index 2 on), each
    ``"M"`` (3x3/2 ceil-mode max pool) or ``(squeeze, expand1x1, expand3x3)``.
    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images ->
    ``(logits (N, num_classes) float32, features)``.
    """

    stem_features: int
    stem_kernel: int
    layers: Sequence[str | tuple[int, int, int]]
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def min_size(self) -> int:
        """Smallest input whose last max pool still sees two rows (torchvision's ``min_size``)."""
        # a ceil-mode 3x3/2 max pool needs 2m input rows for m output rows, the last one needs 2
        size = 2 * 2 ** sum(layer == "M" for layer in self.layers)  # rows into maxpool1
        return (size - 1) * 2 + self.stem_kernel  # through the stride-2 unpadded stem

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=self.min_size()).astype(self.dtype)
        feats = {}
        x = conv(self.stem_features, self.stem_kernel, stride=2, name="features.0", dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=kaiming_uniform)(x)
        x = feats["conv1"] = nn.relu(x)
        x = feats["maxpool1"] = max_pool(x, 3, 2, ceil_mode=True)
        fire = 2  # the paper's numbering of layers: conv1, maxpool1, fire2 ...
        for i, layer in enumerate(self.layers):
            if layer == "M":
                x = feats[f"maxpool{fire - 1}"] = max_pool(x, 3, 2, ceil_mode=True)
            else:
                x = Fire(*layer, dtype=self.dtype, param_dtype=self.param_dtype, name=f"features.{i + 3}")(x)
                feats[f"fire{fire}"] = x
                fire += 1
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = conv(self.num_classes, 1, name="classifier.1", dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=nn.initializers.normal(0.01))(x)
        x = feats["conv10"] = nn.relu(x)
        logits = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return logits, feats


_VERSIONS = {
    # name: (stem channels, stem kernel, layers after the first max pool)
    "squeezenet1_0": (96, 7, ((16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128), (48, 192, 192),
                              (48, 192, 192), (64, 256, 256), "M", (64, 256, 256))),
    "squeezenet1_1": (64, 3, ((16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                              (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}

for _name, (_stem, _kernel, _layers) in _VERSIONS.items():
    register(_name, functools.partial(SqueezeNet, stem_features=_stem, stem_kernel=_kernel, layers=_layers),
             family="squeezenet", torchvision=_name)
