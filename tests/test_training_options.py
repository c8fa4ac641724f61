"""Mixed precision and wrong batches in the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.sources import digits
from jaxcnn.training import OptimizerConfig, create_train_state, make_optimizer, make_train_step
from tests.tiny_model import TinyCNN


@pytest.fixture(scope="module")
def batch():
    src = digits("train", size=16)
    return {"image": jnp.asarray(src.images[:16]), "label": jnp.asarray(src.labels[:16])}


def test_bfloat16_compute_keeps_float32_master_weights(batch):
    tx = make_optimizer(OptimizerConfig(learning_rate=0.05), 10, 100)
    state32 = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0)
    step16 = jax.jit(make_train_step(TinyCNN(dtype=jnp.bfloat16), tx))
    step32 = jax.jit(make_train_step(TinyCNN(), tx))
    new16, m16 = step16(state32, batch)
    new32, m32 = step32(state32, batch)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(new16.params))
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.05 * abs(float(m32["loss"]))
    w16, w32, w0 = (np.asarray(s.params["fc"]["kernel"]) for s in (new16, new32, state32))
    # the bf16 update points the same way as the f32 one
    d16, d32 = (w16 - w0).ravel(), (w32 - w0).ravel()
    assert float(d16 @ d32 / np.linalg.norm(d16) / np.linalg.norm(d32)) > 0.95


def test_batch_of_the_wrong_shape_is_a_one_line_error(batch):
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    state = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0)
    step = jax.jit(make_train_step(TinyCNN(), tx))
    nchw = {**batch, "image": jnp.transpose(batch["image"], (0, 3, 1, 2))}
    with pytest.raises(ValueError, match="looks like NCHW") as e:
        step(state, nchw)
    assert "\n" not in str(e.value).split("\n--------------------")[0]
