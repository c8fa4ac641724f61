"""Fully convolutional networks for dense prediction (Long, Shelhamer & Darrell 2015).

Logits are per-pixel class scores ``(N, H, W, num_classes)`` (float32) at the
input's resolution, for any input size (odd ones included). Default
``num_classes=21`` (PASCAL VOC: background + 20 classes).

``fcn32s`` / ``fcn16s`` / ``fcn8s``: a VGG-16 backbone (module names as in
``vgg16``, so its checkpoint initialises them; see ``fcn_from_vgg16``) whose
max pools run in ceil mode, so map k has size ceil(H / 2**k); fc6 as a 7x7
convolution with padding 3 and fc7 as a 1x1 convolution. The paper instead
pads the first convolution by 100 and crops with tuned offsets; "same"
padding gives any input size a prediction with no offsets to tune. Scores are
upsampled by learnable transposed convolutions initialised to bilinear
interpolation (kernel 2f, stride f, cropped by f/2 so pixel centres align);
FCN-16s adds scores from pool4, FCN-8s also from pool3, both zero-initialised
as in the paper, so at initialisation the skips add nothing to the coarser prediction.

``fcn_resnet50`` / ``fcn_resnet101``: torchvision's: a ResNet with dilated
stages 3-4 (output stride 8), an FCN head (3x3 conv 512, BN, ReLU, dropout
0.1, 1x1 conv), an optional auxiliary head on layer3, bilinear upsampling.

Features: FCN-VGG: the VGG-16 ones (conv1_1 ... pool5), ``fc6``, ``fc7``,
``score_fr`` (stride 32), ``score_pool4``, ``fuse_pool4`` (16s/8s),
``score_pool3``, ``fuse_pool3`` (8s). FCN-ResNet: ``layer1``..``layer4``
(and the other backbone features), ``head`` (low-res scores),
``aux_head`` and ``aux`` (upsampled aux scores) when ``aux_loss``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.layers import batch_norm, check_images, conv, resize_bilinear
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.vgg import CFGS, vgg_features
from jaxcnn.registry import register

Dtype = Any


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """(2f, 2f, C, C) transposed-convolution kernel that upsamples each channel bilinearly by ``f``."""
    size = 2 * factor
    center = (size - 1) / 2.0
    og = np.arange(size)
    filt1d = 1.0 - np.abs(og - center) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = np.outer(filt1d, filt1d)
    return kernel


def _bilinear_init(factor: int):
    def init(key, shape, dtype=jnp.float32):
        return jnp.asarray(bilinear_kernel(factor, shape[-1]), dtype)
    return init


class Upsample(nn.Module):
    """Learnable x``factor`` upsampling (bilinear at init), cropped to ``(height, width)``."""

    factor: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, height: int, width: int):
        f = self.factor
        y = nn.ConvTranspose(x.shape[-1], (2 * f, 2 * f), strides=(f, f), padding="VALID", use_bias=False,
                             kernel_init=_bilinear_init(f), dtype=self.dtype, param_dtype=self.param_dtype,
                             name="up")(x)
        off = f // 2
        return y[:, off:off + height, off:off + width]


class FCNVGG(nn.Module):
    """FCN-32s/16s/8s on VGG-16 (``skips``: 0, 1 or 2 skip layers)."""

    skips: int = 0
    num_classes: int = 21
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="FCN").astype(self.dtype)
        h, w = x.shape[1:3]
        feats: dict = {}
        x = vgg_features(x, CFGS["vgg16"], train=train, batch_norm_=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, bn_axis_name=None, feats=feats, ceil_mode=True)
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype)
        zeros = nn.initializers.zeros
        x = feats["fc6"] = nn.relu(c(4096, 7, padding=3, name="fc6")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = feats["fc7"] = nn.relu(c(4096, 1, name="fc7")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        score = feats["score_fr"] = c(self.num_classes, 1, name="score_fr", kernel_init=zeros)(x)
        up = functools.partial(Upsample, dtype=self.dtype, param_dtype=self.param_dtype)
        for level in range(4, 4 - self.skips, -1):  # pool4, then pool3
            skip = feats[f"pool{level}"]
            feats[f"score_pool{level}"] = c(self.num_classes, 1, name=f"score_pool{level}", kernel_init=zeros)(skip)
            score = up(2, name=f"upscore_pool{level + 1}")(score, skip.shape[1], skip.shape[2])
            score = feats[f"fuse_pool{level}"] = score + feats[f"score_pool{level}"]
        factor = 2 ** (5 - self.skips)
        logits = up(factor, name=f"upscore{factor}")(score, h, w)
        return logits.astype(jnp.float32), feats


class FCNHead(nn.Module):
    """torchvision's FCNHead: 3x3 conv (in/4) - BN - ReLU - dropout 0.1 - 1x1 conv."""

    num_classes: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = conv(x.shape[-1] // 4, 3, padding=1, bias=False, name="0", dtype=self.dtype,
                 param_dtype=self.param_dtype)(x)
        x = nn.relu(batch_norm(train, name="1", param_dtype=self.param_dtype, axis_name=self.bn_axis_name)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x.astype(self.dtype))
        return conv(self.num_classes, 1, name="4", dtype=self.dtype, param_dtype=self.param_dtype)(x)


class FCNResNet(nn.Module):
    """torchvision's fcn_resnet50/101."""

    stage_sizes: tuple
    num_classes: int = 21
    aux_loss: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model="FCN").astype(self.dtype)
        h, w = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name)
        _, feats = ResNet(self.stage_sizes, bottleneck=True, include_top=False,
                          replace_stride_with_dilation=(False, True, True), name="backbone", **kw)(x, train)
        feats = dict(feats)
        head = feats["head"] = FCNHead(self.num_classes, name="classifier", **kw)(feats["layer4"], train)
        if self.aux_loss:
            aux = feats["aux_head"] = FCNHead(self.num_classes, name="aux_classifier", **kw)(feats["layer3"], train)
            feats["aux"] = resize_bilinear(aux.astype(jnp.float32), h, w)
        return resize_bilinear(head.astype(jnp.float32), h, w), feats


def fcn_from_vgg16(vgg_variables: dict, fcn_variables: dict) -> dict:
    """FCN-VGG variables whose backbone, fc6 and fc7 come from a ``vgg16`` checkpoint.

    classifier.0's (25088, 4096) kernel reads pool5 flattened in (C, H, W)
    order; as a convolution it is a (7, 7, 512, 4096) kernel. classifier.3
    becomes the 1x1 fc7. Score and upsampling layers keep ``fcn_variables``.
    """
    vp, out = vgg_variables["params"], jax.tree_util.tree_map(lambda a: a, dict(fcn_variables["params"]))
    for name, value in vp.items():
        if name.startswith("features."):
            out[name] = value
    fc6 = jnp.asarray(vp["classifier.0"]["kernel"]).reshape(512, 7, 7, -1).transpose(1, 2, 0, 3)
    out["fc6"] = {"kernel": fc6, "bias": vp["classifier.0"]["bias"]}
    fc7 = jnp.asarray(vp["classifier.3"]["kernel"])
    out["fc7"] = {"kernel": fc7.reshape(1, 1, *fc7.shape), "bias": vp["classifier.3"]["bias"]}
    return {**fcn_variables, "params": out}


for _name, _skips in (("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)):
    register(_name, functools.partial(FCNVGG, skips=_skips), family="fcn", task="segmentation")
for _name, _stages in (("fcn_resnet50", (3, 4, 6, 3)), ("fcn_resnet101", (3, 4, 23, 3))):
    register(_name, functools.partial(FCNResNet, stage_sizes=_stages), family="fcn", task="segmentation",
             torchvision=_name, pretrained_options={"aux_loss": True})
