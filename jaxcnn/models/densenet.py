"""DenseNet-BC (Huang et al. 2017), torchvision's layout.

Each dense layer (BN-ReLU-conv1x1 to ``bn_size * growth_rate`` channels,
BN-ReLU-conv3x3 to ``growth_rate`` channels) reads the concatenation of the
block input and all earlier layers' outputs; a transition (BN-ReLU-conv1x1
halving the channels, 2x2/2 average pool) joins two blocks. Instead of
re-concatenating a growing list for every layer (quadratic copying), a block
writes each new output into its slice of one preallocated buffer, and a layer
reads the buffer's filled prefix: the same convolutions on the same inputs as
torchvision, hence the same numbers.

Features (NHWC unless noted):
  ``stem``          conv0-norm0-relu0, stride 2
  ``pool0``         3x3/2 max pool, stride 4
  ``denseblockB``   output of dense block B (B = 1..4; strides 4, 8, 16, 32)
  ``transitionT``   output of transition T (T = 1..3; strides 8, 16, 32)
  ``norm5``         final batch norm, before its ReLU (torchvision's ``features``)
  ``pre_logits``    (N, C) ReLU + global average pool
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxcnn.layers import dense as linear
from jaxcnn.layers import avg_pool, batch_norm, check_images, conv, kaiming_uniform_a_sqrt5, max_pool
from jaxcnn.models.registry import register

Dtype = Any

# torch.nn.init.kaiming_normal_ with its defaults (a=0, fan_in): N(0, 2 / fan_in), not truncated
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3 (+ dropout) on the concatenated inputs; returns the new channels."""

    growth_rate: int
    bn_size: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        c = functools.partial(conv, bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=kaiming_normal)
        bn = functools.partial(batch_norm, train, param_dtype=self.param_dtype, axis_name=self.bn_axis_name)
        x = c(self.bn_size * self.growth_rate, 1, name="conv1")(nn.relu(bn(name="norm1")(x)))
        x = c(self.growth_rate, 3, padding=1, name="conv2")(nn.relu(bn(name="norm2")(x)))
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; returns the input and every layer's output, concatenated."""

    num_layers: int
    growth_rate: int
    bn_size: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        width = x.shape[-1]
        # one buffer for the whole block: layer i reads channels [:width], appends growth_rate channels
        buf = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.num_layers * self.growth_rate)))
        for i in range(self.num_layers):
            y = DenseLayer(self.growth_rate, self.bn_size, self.dropout_rate, dtype=self.dtype,
                           param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name,
                           name=f"denselayer{i + 1}")(buf[..., :width], train)
            buf = lax.dynamic_update_slice_in_dim(buf, y.astype(buf.dtype), width, axis=3)
            width += self.growth_rate
        return buf


class Transition(nn.Module):
    """BN-ReLU-conv1x1 to ``features`` channels, then 2x2/2 average pool."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(batch_norm(train, name="norm", param_dtype=self.param_dtype, axis_name=self.bn_axis_name)(x))
        x = conv(self.features, 1, bias=False, name="conv", dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=kaiming_normal)(x)
        return avg_pool(x, 2, 2)


class DenseNet(nn.Module):
    """DenseNet-BC; a variant is ``growth_rate``, ``block_config`` and ``num_init_features``.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images ->
    ``(logits (N, num_classes) float32, features)``.
    """

    growth_rate: int
    block_config: Sequence[int]
    num_init_features: int
    bn_size: int = 4
    num_classes: int = 1000
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    def min_size(self) -> int:
        """Smallest input for which the last transition's 2x2/2 pool is non-empty (torchvision: 29)."""
        rows = 2 ** (len(self.block_config) - 1)  # rows into transition1 (each 2x2/2 pool halves, floor)
        rows = 2 * rows - 1  # through pool0 (3x3/2, padding 1)
        return 2 * rows - 1  # through conv0 (7x7/2, padding 3)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=self.min_size()).astype(self.dtype)
        bn = functools.partial(batch_norm, train, param_dtype=self.param_dtype, axis_name=self.bn_axis_name)
        options = dict(dtype=self.dtype, param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name)
        feats = {}
        x = conv(self.num_init_features, 7, stride=2, padding=3, bias=False, name="features.conv0", dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=kaiming_normal)(x)
        x = feats["stem"] = nn.relu(bn(name="features.norm0")(x)).astype(self.dtype)
        x = feats["pool0"] = max_pool(x, 3, 2, 1)
        width = self.num_init_features
        for b, num_layers in enumerate(self.block_config):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.dropout_rate, **options,
                           name=f"features.denseblock{b + 1}")(x, train)
            feats[f"denseblock{b + 1}"] = x
            width += num_layers * self.growth_rate
            if b != len(self.block_config) - 1:
                width //= 2
                x = Transition(width, **options, name=f"features.transition{b + 1}")(x, train)
                feats[f"transition{b + 1}"] = x
        x = feats["norm5"] = bn(name="features.norm5")(x).astype(self.dtype)
        x = jnp.mean(nn.relu(x).astype(jnp.float32), axis=(1, 2))
        x = feats["pre_logits"] = x.astype(self.dtype)
        logits = linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier",
                          kernel_init=kaiming_uniform_a_sqrt5)(x)
        return logits.astype(jnp.float32), feats


_VARIANTS = {
    # name: (growth rate, block config, initial features)
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}

for _name, (_growth, _blocks, _init) in _VARIANTS.items():
    register(_name, functools.partial(DenseNet, growth_rate=_growth, block_config=_blocks, num_init_features=_init),
             family="densenet", torchvision=_name)
