"""A tiny CNN with batch norm and dropout for engine tests (compiles in about a second).

Registered as ``tiny_cnn`` by ``register()``; recipe files used by the
subprocess tests import this module, so child processes see it too.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers, registry


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


def register():
    if "tiny_cnn" not in registry._REGISTRY:
        registry.register("tiny_cnn", TinyCNN, family="tiny", resolution=16)
