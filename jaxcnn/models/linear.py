"""Softmax regression on the pixels: the baseline that needs no CNN.

Many problems need nothing more than a linear classifier on clean data; training
``linear`` beside a CNN on the same data set (``jaxcnn train model=linear``) says
how much the convolutions add. The model flattens the normalized image and applies
one dense layer, ``logits = W x + b``; with the default optimizer's L2 decay on
kernels it is L2-regularised multinomial logistic regression fitted by SGD.

``(N, H, W, C) -> (logits (N, num_classes) float32, {"pixels": (N, H*W*C)})``;
the weight matrix has ``H*W*C`` rows, so its shape follows the image size the
model is first applied to.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models.registry import register


class Linear(nn.Module):
    num_classes: int = 1000
    dropout_rate: float = 0.0          # on the pixels, for symmetry with the CNNs' heads (off by default)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.check_images(x, model="Linear").astype(self.dtype)
        x = x.reshape(x.shape[0], -1)
        feats = {"pixels": x}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = layers.dense(self.num_classes, name="fc", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return logits.astype(jnp.float32), feats


register("linear", Linear, family="linear")
