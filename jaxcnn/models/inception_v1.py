"""GoogLeNet as published (Szegedy et al. 2014, "Going deeper with convolutions"), with lucid's layer names.

The network of the paper's Table 1 and of BVLC's Caffe model (``models/bvlc_googlenet``), the one
DeepDream, lucid and Distill's articles study: no batch normalization, ReLU after every convolution,
local response normalization after the stem's first pool and after its 3x3 convolution (Caffe's LRN:
5 channels, alpha 1e-4 over the window, beta 0.75, k 1), Inception modules whose third branch is a true
5x5 convolution (pad 2), max pools of 3x3/2 in Caffe's ceil mode, and at the top the 7x7/1 average pool
(the global mean at 224 px; the global mean at any size here), dropout 0.4 and a linear classifier.
torchvision's ``googlenet`` is another network (batch norm, a 3x3 where this has 5x5, 2x2 pools).

The auxiliary classifiers (``aux_logits``) read ``mixed4a`` and ``mixed4d``: 5x5/3 average pool (ceil
mode), 1x1 convolution to 128 + ReLU, fully connected 2048 -> 1024 + ReLU, dropout 0.7, linear; their
logits are ``features["aux1"]``/``["aux2"]`` in training, which the train step weighs by 0.3 as the
paper does. They run in training and initialisation only.

Names follow lucid's ``InceptionV1`` (Caffe's in brackets): ``conv2d0`` (conv1/7x7_s2), ``maxpool0``,
``localresponsenorm0``, ``conv2d1`` (conv2/3x3_reduce), ``conv2d2`` (conv2/3x3), ``localresponsenorm1``,
``maxpool1``, ``mixed3a``, ``mixed3b``, ``maxpool4``, ``mixed4a`` .. ``mixed4e``, ``maxpool10``, ``mixed5a``,
``mixed5b``, ``avgpool0``; inside a module ``1x1``, ``3x3_bottleneck``, ``3x3``, ``5x5_bottleneck``, ``5x5``,
``pool_reduce`` (pool_proj); the heads ``head0_bottleneck``, ``nn0``, ``softmax0`` (loss1/conv, fc,
classifier), ``head1_*``, and the classifier ``softmax2`` (loss3/classifier).

Features (NHWC; strides w.r.t. the input; channels in brackets):
  ``conv2d0_pre_relu``, ``conv2d0``                 stride 2 [64]
  ``maxpool0``, ``localresponsenorm0``              stride 4 [64]
  ``conv2d1_pre_relu``, ``conv2d1``, ``conv2d2_pre_relu``, ``conv2d2``, ``localresponsenorm1``
                                                    stride 4 [64, 64, 192, 192, 192]
  ``maxpool1``                                      stride 8 [192]
  ``mixed3a``, ``mixed3b`` (and ``*_pre_relu``)     stride 8 [256, 480]
  ``maxpool4``                                      stride 16 [480]
  ``mixed4a`` .. ``mixed4e`` (and ``*_pre_relu``)   stride 16 [512, 512, 512, 528, 832]
  ``maxpool10``                                     stride 32 [832]
  ``mixed5a``, ``mixed5b`` (and ``*_pre_relu``)     stride 32 [832, 1024]
  ``avgpool0``, ``pre_logits``                      (N, 1024) the global average pool
  ``aux1``, ``aux2``                                (N, num_classes) float32, training only
A ``*_pre_relu`` feature is the concatenation of the convolutions before their ReLU (lucid's targets
such as ``mixed4a_pre_relu``); the ReLU of it is the layer.

Input: like every jaxcnn model, ImageNet-normalized RGB (``jaxcnn.preprocess``). BVLC's weights expect
Caffe's input instead, BGR in 0..255 minus the per-channel mean (B 104, G 117, R 123, BVLC's training
mean); ``transform_input=True`` (set by ``load_pretrained``) converts to it inside the model.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.imagenet import MEAN, STD
from jaxcnn.layers import avg_pool, check_images, conv, flatten_chw, local_response_norm, max_pool
from jaxcnn.layers import dense as linear
from jaxcnn.models.registry import register

Dtype = Any

# BVLC's training mean, BGR order, in 0..255 (models/bvlc_googlenet/train_val.prototxt)
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
# ImageNet-normalized RGB z -> Caffe input: BGR channel c = 255 * (z[2 - c] * STD[2 - c] + MEAN[2 - c]) - mean[c]
_CAFFE_SCALE = (255.0 * np.asarray(STD)[::-1]).astype(np.float32)
_CAFFE_SHIFT = (255.0 * np.asarray(MEAN)[::-1] - np.asarray(CAFFE_MEAN_BGR)).astype(np.float32)

# Caffe's "xavier" filler (uniform, variance 1 / fan_in) and BVLC's constant 0.2 biases
xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
bias_02 = nn.initializers.constant(0.2)


def caffe_input(x: jax.Array) -> jax.Array:
    """ImageNet-normalized RGB (N, H, W, 3) -> Caffe's BGR 0..255 minus BVLC's mean."""
    return x[..., ::-1] * _CAFFE_SCALE + _CAFFE_SHIFT


def lrn(x: jax.Array) -> jax.Array:
    """Caffe's LRN layer as BVLC's GoogLeNet sets it: local_size 5, alpha 1e-4 (Caffe divides it by the
    window), beta 0.75, k 1."""
    return local_response_norm(x, size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)


# the paper's Table 1: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), or a max pool
_LAYOUT = (
    ("mixed3a", (64, 96, 128, 16, 32, 32)),
    ("mixed3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool4", None),
    ("mixed4a", (192, 96, 208, 16, 48, 64)),
    ("mixed4b", (160, 112, 224, 24, 64, 64)),
    ("mixed4c", (128, 128, 256, 24, 64, 64)),
    ("mixed4d", (112, 144, 288, 32, 64, 64)),
    ("mixed4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool10", None),
    ("mixed5a", (256, 160, 320, 32, 128, 128)),
    ("mixed5b", (384, 192, 384, 48, 128, 128)),
)
_AUX_AFTER = {"mixed4a": ("aux1", "head0_bottleneck", "nn0", "softmax0"),
              "mixed4d": ("aux2", "head1_bottleneck", "nn1", "softmax1")}


class Mixed(nn.Module):
    """One Inception module: 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3/1 max pool-1x1, each convolution with its ReLU.

    Returns ``(output, pre_relu)``, both the concatenation of the four branches.
    """

    widths: tuple[int, int, int, int, int, int]
    conv: Any

    @nn.compact
    def __call__(self, x):
        c1, c3r, c3, c5r, c5, cp = self.widths
        c = self.conv
        b1 = c(c1, 1, name="1x1")(x)
        b2 = c(c3, 3, padding=1, name="3x3")(nn.relu(c(c3r, 1, name="3x3_bottleneck")(x)))
        b3 = c(c5, 5, padding=2, name="5x5")(nn.relu(c(c5r, 1, name="5x5_bottleneck")(x)))
        b4 = c(cp, 1, name="pool_reduce")(max_pool(x, 3, 1, 1, ceil_mode=True))
        pre = jnp.concatenate([b1, b2, b3, b4], axis=-1)
        return nn.relu(pre), pre


class InceptionV1(nn.Module):
    """GoogLeNet of the paper (and of BVLC's Caffe model).

    ``__call__(x, train=False)``: x (N, H, W, 3) ImageNet-normalized images, H, W >= ``MIN_SIZE`` ->
    ``(logits (N, num_classes) float32, features)``.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.4
    aux_dropout_rate: float = 0.7
    aux_logits: bool = True
    transform_input: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # the smallest input for which every max pool has a window to pool
    MIN_SIZE = 31

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self).__name__, min_size=self.MIN_SIZE)
        if self.transform_input:
            x = caffe_input(x)
        x = x.astype(self.dtype)
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=xavier,
                              bias_init=bias_02)
        feats = {}

        def conv_relu(x, features, kernel, name, **kw):
            pre = feats[f"{name}_pre_relu"] = c(features, kernel, name=name, **kw)(x)
            feats[name] = nn.relu(pre)
            return feats[name]

        x = conv_relu(x, 64, 7, "conv2d0", stride=2, padding=3)
        x = feats["maxpool0"] = max_pool(x, 3, 2, ceil_mode=True)
        x = feats["localresponsenorm0"] = lrn(x)
        x = conv_relu(x, 64, 1, "conv2d1")
        x = conv_relu(x, 192, 3, "conv2d2", padding=1)
        x = feats["localresponsenorm1"] = lrn(x)
        x = feats["maxpool1"] = max_pool(x, 3, 2, ceil_mode=True)
        run_aux = self.aux_logits and (train or self.is_initializing())
        for name, widths in _LAYOUT:
            if widths is None:
                x = feats[name] = max_pool(x, 3, 2, ceil_mode=True)
                continue
            x, feats[f"{name}_pre_relu"] = Mixed(widths, c, name=name)(x)
            feats[name] = x
            if name in _AUX_AFTER and run_aux:
                aux = self._aux_head(x, c, _AUX_AFTER[name][1:], train)
                if train:
                    feats[_AUX_AFTER[name][0]] = aux
        x = feats["avgpool0"] = feats["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = linear(self.num_classes, name="softmax2", dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=xavier, bias_init=nn.initializers.zeros)(x)
        return logits.astype(jnp.float32), feats

    def _aux_head(self, x, c, names, train):
        bottleneck, fc, classifier = names
        if min(x.shape[1:3]) < 3:
            raise ValueError(f"InceptionV1's auxiliary heads need mixed4a maps of at least 3x3 (inputs of at least "
                             f"47x47 pixels); got {x.shape[1]}x{x.shape[2]} maps: pass aux_logits=False")
        dense = functools.partial(linear, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=xavier)
        x = nn.relu(c(128, 1, name=bottleneck)(avg_pool(x, 5, 3, ceil_mode=True)))
        x = nn.relu(dense(1024, name=fc, bias_init=bias_02)(flatten_chw(x)))
        x = nn.Dropout(self.aux_dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, name=classifier, bias_init=nn.initializers.zeros)(x).astype(jnp.float32)


register("inception_v1", InceptionV1, family="inception_v1", resolution=224,
         pretrained_options={"transform_input": True, "aux_logits": False})
