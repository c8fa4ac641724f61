"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell 2015).

Logits are per-pixel class scores ``(N, H, W, num_classes)`` (float32) at the
input's resolution, for any input size (odd ones included). Default
``num_classes=21`` (PASCAL VOC: background + 20 classes).

``fcn32s`` / ``fcn16s`` / ``fcn8s``: the paper's nets on VGG-16 (no
torchvision twin). The backbone is ``vgg16``'s convolutional part with the
same module names (``features.N``), so a ``vgg16`` checkpoint initialises it
directly (``fcn_from_vgg16`` also turns its classifier into fc6/fc7). Its max
pools run in ceil mode, so map k has size ceil(H / 2**k) and covers the whole
image. fc6 is VGG's first Linear as a 7x7 convolution (4096) with padding 3,
fc7 a 1x1 convolution (4096), each followed by ReLU and dropout, then
``score_fr`` (1x1 -> classes). The paper pads the first convolution by 100
instead and crops the upsampled scores at offsets tuned per net; "same"
padding gives every input size a prediction aligned with the image by
construction, with no offsets to tune and no 100-pixel border of wasted
computation.

Upsampling (``upscore*``) is a learnable ``nn.ConvTranspose`` (kernel 2f,
stride f, no bias) initialised to bilinear interpolation, per class (zero
between classes). The score map is edge-padded by one pixel and the result
cropped so that coarse pixel i sits at the centre of the f x f input block
it summarises: at initialisation the layer *is* bilinear interpolation
(``align_corners=False``) at every output pixel, borders included. FCN-16s
upsamples score_fr x2 (``upscore2``) and adds ``score_pool4`` (1x1 on pool4),
then upsamples x16; FCN-8s also adds ``score_pool3`` after another x2
(``upscore_pool4``), then upsamples x8. As in the paper, the class scoring
layers (score_fr, score_pool4, score_pool3) start at zero, so at
initialisation a skip adds nothing to the coarser net's prediction. The paper
learns the x2 layers and the reference Caffe nets keep every upsampling layer
fixed; for that, mask the ``upscore*`` parameters out of the optimizer.

``fcn_resnet50`` / ``fcn_resnet101``: torchvision's. A ResNet (module
``backbone``) with dilated stages 3 and 4 (output stride 8), an FCN head
(``classifier``: 3x3 conv to 512, BN, ReLU, dropout 0.1, 1x1 conv), an
auxiliary head of the same shape on layer3 (``aux_classifier``, when
``aux_loss``; torchvision's checkpoints have it), and bilinear upsampling of
both to the input size.

Features (NHWC; stride relative to the input):
  FCN-VGG:
    ``conv{b}_{i}``, ``pool{b}``  VGG-16's (see ``jaxcnn.models.vgg``), pools in ceil mode
    ``fc6``, ``fc7``              post-ReLU maps, stride 32
    ``score_fr``                  class scores from fc7, stride 32
    ``upscore2``                  score_fr upsampled x2, stride 16 (16s, 8s)
    ``score_pool4``, ``fuse_pool4``  scores from pool4, their sum with upscore2, stride 16 (16s, 8s)
    ``upscore_pool4``             fuse_pool4 upsampled x2, stride 8 (8s)
    ``score_pool3``, ``fuse_pool3``  scores from pool3, their sum with upscore_pool4, stride 8 (8s)
  The final upsampling (``upscore32`` / ``upscore16`` / ``upscore8``) gives the logits. Layer and
  feature names are those of the reference Caffe nets (whose FCN-32s calls upscore32 ``upscore``).
  FCN-ResNet:
    ``layer1`` .. ``layer4``      backbone stages, strides 4, 8, 8, 8
    ``head``                      classifier scores, stride 8
    ``aux_head``, ``aux``         aux_classifier scores on layer3 (stride 8) and upsampled to the
                                  input size (float32), when ``aux_loss``
Minimum input: 1x1.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.layers import batch_norm, check_images, conv, kaiming_uniform_a_sqrt5, resize_bilinear
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.vgg import CFGS, linear_init, vgg_features
from jaxcnn.models.registry import register

Dtype = Any


# ----------------------------------------------------------------------------
# bilinear upsampling by a transposed convolution


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """(2f, 2f, C, C) kernel with which a stride-f transposed convolution upsamples each channel bilinearly."""
    size = 2 * factor
    filt = 1.0 - np.abs(np.arange(size) - (size - 1) / 2.0) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(filt, filt)[:, :, None]
    return kernel


def bilinear_init(factor: int) -> Callable:
    """Initializer of an ``nn.ConvTranspose`` kernel (2f, 2f, C, C): ``bilinear_kernel``."""
    def init(key, shape, dtype=jnp.float32):
        del key
        if tuple(shape) != (2 * factor, 2 * factor, shape[-1], shape[-1]):
            raise ValueError(f"a bilinear x{factor} kernel must be (2f, 2f, C, C), got {tuple(shape)}")
        return jnp.asarray(bilinear_kernel(factor, shape[-1]), dtype)
    return init


def upsample(layer: nn.ConvTranspose, x: jax.Array, factor: int, height: int, width: int) -> jax.Array:
    """Applies a (2f, 2f) stride-f transposed convolution ``layer`` and aligns the result.

    Coarse pixel i covers fine pixels [f*i, f*(i+1)), so its centre is fine
    coordinate f*i + (f-1)/2; the transposed convolution puts it at f*i + f - 1/2
    (the centre of the 2f kernel), hence a crop of f/2. One edge-replicated
    coarse pixel on each side (a further crop of f) lets the border output
    pixels interpolate like the interior ones instead of fading towards zero.
    """
    if factor % 2 or height > factor * x.shape[1] or width > factor * x.shape[2]:
        raise ValueError(f"cannot upsample {x.shape[1]}x{x.shape[2]} x{factor} to {height}x{width}")
    y = layer(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge"))
    off = factor + factor // 2
    return y[:, off:off + height, off:off + width]


def upsampling_layer(factor: int, channels: int, *, name: str | None = None, dtype: Dtype = jnp.float32,
                     param_dtype: Dtype = jnp.float32) -> nn.ConvTranspose:
    """The paper's learnable upsampling: ``nn.ConvTranspose`` (2f, 2f), stride f, no bias, bilinear init."""
    return nn.ConvTranspose(channels, (2 * factor, 2 * factor), strides=(factor, factor), padding="VALID",
                            use_bias=False, kernel_init=bilinear_init(factor), dtype=dtype, param_dtype=param_dtype,
                            name=name)


# ----------------------------------------------------------------------------
# FCN-32s / 16s / 8s on VGG-16


class FCNVGG(nn.Module):
    """FCN-32s/16s/8s; ``skips`` = 0, 1 (pool4) or 2 (pool4, pool3) skip layers.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images ->
    ``(logits (N, H, W, num_classes) float32, features)``.
    """

    skips: int = 0
    num_classes: int = 21
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.skips not in (0, 1, 2):
            raise ValueError(f"FCNVGG: skips must be 0 (FCN-32s), 1 (16s) or 2 (8s), got {self.skips}")
        x = check_images(x, model=type(self).__name__).astype(self.dtype)
        h, w = x.shape[1:3]
        feats: dict = {}
        x = vgg_features(x, CFGS["vgg16"], feats, train=train, use_bn=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, ceil_mode=True)
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype)
        zeros = nn.initializers.zeros
        dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        x = feats["fc6"] = nn.relu(c(4096, 7, padding=3, name="fc6", kernel_init=linear_init, bias_init=zeros)(x))
        x = feats["fc7"] = nn.relu(c(4096, 1, name="fc7", kernel_init=linear_init, bias_init=zeros)(dropout()(x)))
        score = feats["score_fr"] = c(self.num_classes, 1, name="score_fr", kernel_init=zeros)(dropout()(x))

        def up(score, factor, size, name):
            layer = upsampling_layer(factor, self.num_classes, name=name, dtype=self.dtype,
                                     param_dtype=self.param_dtype)
            return upsample(layer, score, factor, *size)

        for level, up_name in zip((4, 3)[:self.skips], ("upscore2", "upscore_pool4")):
            pool = feats[f"pool{level}"]
            score = feats[up_name] = up(score, 2, pool.shape[1:3], up_name)
            skip = feats[f"score_pool{level}"] = c(self.num_classes, 1, name=f"score_pool{level}",
                                                  kernel_init=zeros)(pool)
            score = feats[f"fuse_pool{level}"] = score + skip
        factor = 32 // 2 ** self.skips
        logits = up(score, factor, (h, w), f"upscore{factor}")
        return logits.astype(jnp.float32), feats


def fcn_from_vgg16(vgg_variables: dict, fcn_variables: dict) -> dict:
    """FCN-32s/16s/8s variables whose backbone, fc6 and fc7 come from a ``vgg16`` checkpoint.

    The paper's initialisation. classifier.0 reads pool5 (7x7x512) flattened
    in (C, H, W) order: its (25088, 4096) kernel is the (7, 7, 512, 4096) fc6
    kernel; classifier.3 becomes the 1x1 fc7. Every other variable (score and
    upsampling layers) is taken from ``fcn_variables``; the replaced leaves
    there may be ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``), so a
    caller need not initialise 134M parameters only to overwrite them.

    Raises:
      ValueError when ``vgg_variables`` are not a plain ``vgg16``'s (e.g. ``vgg16_bn``'s).
    """
    vgg, target = vgg_variables["params"], fcn_variables["params"]
    backbone = sorted(name for name in target if name.startswith("features."))
    problems = sorted(set(backbone) ^ {name for name in vgg if name.startswith("features.")})
    problems += [name for name in ("classifier.0", "classifier.3") if name not in vgg]
    if not problems:
        expected = {**{name: target[name]["kernel"].shape for name in backbone},
                    "classifier.0": (7 * 7 * 512, 4096), "classifier.3": (4096, 4096)}
        problems = [f"{name} {tuple(vgg[name]['kernel'].shape)} (expected {tuple(shape)})"
                    for name, shape in expected.items() if tuple(vgg[name]["kernel"].shape) != tuple(shape)]
    if problems:
        raise ValueError(f"fcn_from_vgg16: these are not vgg16 variables: {', '.join(problems[:6])}")
    fc6 = jnp.asarray(vgg["classifier.0"]["kernel"]).reshape(512, 7, 7, 4096).transpose(1, 2, 0, 3)
    fc7 = jnp.asarray(vgg["classifier.3"]["kernel"]).reshape(1, 1, 4096, 4096)
    new = {**{name: vgg[name] for name in backbone},
           "fc6": {"kernel": fc6, "bias": vgg["classifier.0"]["bias"]},
           "fc7": {"kernel": fc7, "bias": vgg["classifier.3"]["bias"]}}
    params = dict(target)
    for name, layer in new.items():
        params[name] = {leaf: jnp.asarray(v, target[name][leaf].dtype) for leaf, v in layer.items()}
    return {**fcn_variables, "params": params}


# ----------------------------------------------------------------------------
# torchvision's FCN-ResNet


def _torch_conv_bias(fan_in: int) -> Callable:
    """torch's default ``nn.Conv2d`` bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class FCNHead(nn.Module):
    """torchvision's FCNHead: 3x3 conv (in/4, no bias) - BN - ReLU - dropout - 1x1 conv; torch's default init."""

    num_classes: int
    dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=kaiming_uniform_a_sqrt5)
        inter = x.shape[-1] // 4
        x = c(inter, 3, padding=1, bias=False, name="0")(x)
        x = nn.relu(batch_norm(train, name="1", param_dtype=self.param_dtype, axis_name=self.bn_axis_name)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x.astype(self.dtype))
        return c(self.num_classes, 1, name="4", bias_init=_torch_conv_bias(inter))(x)


class FCNResNet(nn.Module):
    """torchvision's fcn_resnet50/101; a variant is the backbone's ``stage_sizes``.

    ``__call__(x, train=False)``: x (N, H, W, 3) normalized images ->
    ``(logits (N, H, W, num_classes) float32, features)``.
    """

    stage_sizes: tuple
    num_classes: int = 21
    aux_loss: bool = True
    dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__).astype(self.dtype)
        h, w = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name)
        _, backbone = ResNet(self.stage_sizes, bottleneck=True, include_top=False,
                             replace_stride_with_dilation=(False, True, True), name="backbone", **kw)(x, train)
        feats = {f"layer{s}": backbone[f"layer{s}"] for s in range(1, 5)}
        head = functools.partial(FCNHead, self.num_classes, self.dropout_rate, **kw)
        scores = feats["head"] = head(name="classifier")(feats["layer4"], train)
        if self.aux_loss:
            aux = feats["aux_head"] = head(name="aux_classifier")(feats["layer3"], train)
            feats["aux"] = resize_bilinear(aux.astype(jnp.float32), h, w)
        return resize_bilinear(scores.astype(jnp.float32), h, w), feats


for _name, _skips in (("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)):
    register(_name, functools.partial(FCNVGG, skips=_skips), family="fcn", task="segmentation", resolution=500)
for _name, _stages in (("fcn_resnet50", (3, 4, 6, 3)), ("fcn_resnet101", (3, 4, 23, 3))):
    register(_name, functools.partial(FCNResNet, stage_sizes=_stages), family="fcn", task="segmentation",
             resolution=520, torchvision=_name, pretrained_options={"aux_loss": True})
