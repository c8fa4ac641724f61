"""ResNet (He et al. 2015), torchvision's v1.5 layout, and its ResNeXt / wide variants.

Stride of a downsampling bottleneck sits on its 3x3 convolution, as in
torchvision. ``replace_stride_with_dilation`` turns stages 2-4 into dilated
stages (the FCN/DeepLab backbone), ``include_top=False`` drops pooling and
the classifier.

Features (NHWC unless noted):
  ``stem``        conv1-bn-relu, stride 2
  ``stem_pool``   3x3/2 max pool, stride 4
  ``layerS.B``    output of block B of stage S (S = 1..4)
  ``layerS``      output of stage S (strides 4, 8, 16, 32)
  ``pre_logits``  (N, C) global average pool (``include_top`` only)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.layers import dense as linear
from jaxcnn.layers import batch_norm, check_images, conv, kaiming_fan_out, kaiming_uniform_a_sqrt5, max_pool
from jaxcnn.models.registry import register

Dtype = Any


class Block(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1-3x3-1x1) residual block."""

    planes: int
    bottleneck: bool
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        c = functools.partial(conv, bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=kaiming_fan_out)
        bn = functools.partial(batch_norm, train, param_dtype=self.param_dtype, axis_name=self.bn_axis_name)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        d = self.dilation
        if self.bottleneck:
            width = int(self.planes * (self.base_width / 64.0)) * self.groups
            out_ch = self.planes * 4
            y = nn.relu(bn(name="bn1")(c(width, 1, name="conv1")(x)))
            y = c(width, 3, stride=self.stride, padding=d, dilation=d, groups=self.groups, name="conv2")(y)
            y = nn.relu(bn(name="bn2")(y))
            y = bn(name="bn3", scale_init=last_scale)(c(out_ch, 1, name="conv3")(y))
        else:
            out_ch = self.planes
            y = c(out_ch, 3, stride=self.stride, padding=d, dilation=d, name="conv1")(x)
            y = nn.relu(bn(name="bn1")(y))
            y = bn(name="bn2", scale_init=last_scale)(c(out_ch, 3, padding=d, dilation=d, name="conv2")(y))
        if self.downsample:
            x = bn(name="downsample.1")(c(out_ch, 1, stride=self.stride, name="downsample.0")(x))
        return nn.relu(y + x).astype(self.dtype)


class ResNet(nn.Module):
    """ResNet family; a variant is ``stage_sizes`` + ``bottleneck`` (+ groups/width).

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images ->
    ``(logits (N, num_classes) float32, features)``.
    """

    stage_sizes: Sequence[int]
    bottleneck: bool
    num_classes: int = 1000
    groups: int = 1
    width_per_group: int = 64
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    include_top: bool = True
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__).astype(self.dtype)
        feats = {}
        x = conv(64, 7, stride=2, padding=3, bias=False, name="conv1", dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=kaiming_fan_out)(x)
        x = nn.relu(batch_norm(train, name="bn1", param_dtype=self.param_dtype, axis_name=self.bn_axis_name)(x))
        x = feats["stem"] = x.astype(self.dtype)
        x = feats["stem_pool"] = max_pool(x, 3, 2, 1)
        in_ch, dilation = 64, 1
        expansion = 4 if self.bottleneck else 1
        for s, blocks in enumerate(self.stage_sizes):
            planes = 64 * 2 ** s
            stride = 1 if s == 0 else 2
            previous_dilation = dilation
            if s > 0 and self.replace_stride_with_dilation[s - 1]:
                dilation, stride = dilation * stride, 1
            for b in range(blocks):
                first = b == 0
                x = Block(planes, self.bottleneck, stride=stride if first else 1,
                          dilation=previous_dilation if first else dilation,
                          downsample=first and (stride != 1 or in_ch != planes * expansion),
                          groups=self.groups, base_width=self.width_per_group,
                          zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                          param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name,
                          name=f"layer{s + 1}.{b}")(x, train)
                feats[f"layer{s + 1}.{b}"] = x
            in_ch = planes * expansion
            feats[f"layer{s + 1}"] = x
        if not self.include_top:
            return None, feats
        x = feats["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        logits = linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc",
                          kernel_init=kaiming_uniform_a_sqrt5)(x)
        return logits.astype(jnp.float32), feats


_VARIANTS = {
    # name: (stage sizes, bottleneck, groups, width per group)
    "resnet18": ((2, 2, 2, 2), False, 1, 64),
    "resnet34": ((3, 4, 6, 3), False, 1, 64),
    "resnet50": ((3, 4, 6, 3), True, 1, 64),
    "resnet101": ((3, 4, 23, 3), True, 1, 64),
    "resnet152": ((3, 8, 36, 3), True, 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), True, 32, 4),
    "wide_resnet50_2": ((3, 4, 6, 3), True, 1, 128),
}

for _name, (_stages, _bottleneck, _groups, _width) in _VARIANTS.items():
    register(_name, functools.partial(ResNet, stage_sizes=_stages, bottleneck=_bottleneck, groups=_groups,
                                      width_per_group=_width),
             family="resnet", torchvision=_name)
