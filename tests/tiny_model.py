"""A tiny CNN with batch norm and dropout for engine tests (compiles in about a second).

Registered as ``tiny_cnn`` by ``register()``; recipe files used by the
subprocess tests import this module, so child processes see it too.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models import registry


class TinyCNN(nn.Module):
    num_classes: int = 10
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.check_images(x, model="TinyCNN").astype(self.dtype)
        feats = {}
        for i, ch in enumerate((8, 16)):
            x = layers.conv(ch, 3, padding=1, bias=False, name=f"conv{i}", dtype=self.dtype,
                            param_dtype=self.param_dtype)(x)
            x = nn.relu(layers.batch_norm(train, name=f"bn{i}", axis_name=self.bn_axis_name)(x)).astype(self.dtype)
            x = feats[f"block{i}"] = layers.max_pool(x, 2, 2)
        x = feats["pre_logits"] = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, name="fc", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return logits.astype(jnp.float32), feats


class SmallCNN(TinyCNN):
    """Three blocks of two 3x3 conv-BN-ReLU (16, 32, 64 channels) and a max pool, global average, dense: enough
    capacity for digits under heavy augmentation (mixup, TrivialAugment), small enough to train in seconds. The
    options are TinyCNN's."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.check_images(x, model="SmallCNN").astype(self.dtype)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = {}
        for i, ch in enumerate((16, 32, 64)):
            for j in range(2):
                x = layers.conv(ch, 3, padding=1, bias=False, name=f"conv{i}_{j}", **kw)(x)
                x = nn.relu(layers.batch_norm(train, name=f"bn{i}_{j}", axis_name=self.bn_axis_name)(x))
                x = x.astype(self.dtype)
            x = feats[f"block{i}"] = layers.max_pool(x, 2, 2)
        x = feats["pre_logits"] = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, name="fc", **kw)(x)
        return logits.astype(jnp.float32), feats


def register():
    if "tiny_cnn" not in registry._REGISTRY:
        registry.register("tiny_cnn", TinyCNN, family="tiny", resolution=16)
    if "small_cnn" not in registry._REGISTRY:
        registry.register("small_cnn", SmallCNN, family="tiny", resolution=16)


class TinyFCN(nn.Module):
    """A tiny FCN for segmentation tests: convs to stride 4, scores upsampled bilinearly plus a stride-1 skip.

    ``(N, H, W, 3) -> (logits (N, H, W, num_classes) float32, features)``; receptive field 26 px.
    """

    num_classes: int = 4
    width: int = 16
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.check_images(x, model="TinyFCN").astype(self.dtype)
        h, w = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = {}
        for i, (ch, pool) in enumerate(((self.width, True), (2 * self.width, True), (2 * self.width, False),
                                        (2 * self.width, False))):
            x = layers.conv(ch, 3, padding=1, bias=False, name=f"conv{i}", **kw)(x)
            x = nn.relu(layers.batch_norm(train, name=f"bn{i}", axis_name=self.bn_axis_name)(x)).astype(self.dtype)
            feats[f"block{i}"] = x
            if pool:
                x = layers.max_pool(x, 2, 2)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        score = feats["score"] = layers.conv(self.num_classes, 1, name="score", **kw)(x)
        skip = layers.conv(self.num_classes, 1, name="score_skip", **kw)(feats["block0"])
        logits = layers.resize_bilinear(score.astype(jnp.float32), h, w) + skip.astype(jnp.float32)
        return logits, feats


def register_segmentation():
    if "tiny_fcn" not in registry._REGISTRY:
        registry.register("tiny_fcn", TinyFCN, family="tiny", resolution=32, task="segmentation")
