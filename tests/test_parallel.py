"""Data parallelism on 8 simulated CPU devices: jit-sharded and pmap equal one device."""

import jax
import numpy as np
import pytest

from jaxcnn.data.sources import digits
from jaxcnn.parallel import PMAP_AXIS, DataParallel
from jaxcnn.training import OptimizerConfig, create_train_state, make_optimizer, make_train_step
from tests.tiny_model import TinyCNN


@pytest.fixture(scope="module")
def setup():
    src = digits("train", size=16)
    batch = {"image": src.images[:32], "label": src.labels[:32]}
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1, weight_decay=5e-4), 10, 100)
    state0 = jax.device_get(create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0))
    return batch, tx, state0


def _one_step(setup, strategy, ndev, traces=None):
    batch, tx, state0 = setup
    model = TinyCNN(bn_axis_name=PMAP_AXIS if strategy == "pmap" else None)
    dp = DataParallel(strategy, jax.devices()[:ndev])
    fn = make_train_step(model, tx, axis_name=PMAP_AXIS if strategy == "pmap" else None)
    if traces is not None:
        def fn(state, b, _inner=fn):  # noqa: F811  (counts traces: Python runs only while tracing)
            traces.append(1)
            return _inner(state, b)
    step = dp.compile_train_step(fn, state0)   # the placement protocol's signature
    state, metrics = step(dp.put_state(state0), dp.put_batch(batch))
    return float(metrics["loss"]), dp.host_state(state), step, dp, state


@pytest.fixture(scope="module")
def reference(setup):
    return _one_step(setup, "jit", 1)


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_eight_devices_equal_one(setup, reference, strategy):
    loss1, state1, *_ = reference
    loss8, state8, *_ = _one_step(setup, strategy, 8)
    assert abs(loss8 - loss1) <= 1e-6 * abs(loss1)
    for a, b in zip(jax.tree_util.tree_leaves(state8.params), jax.tree_util.tree_leaves(state1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # batch-norm statistics are those of the global batch, not of a device's slice
    for a, b in zip(jax.tree_util.tree_leaves(state8.batch_stats), jax.tree_util.tree_leaves(state1.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(state8.step) == 1


def test_step_compiles_once(setup):
    traces = []
    _, _, step, dp, state = _one_step(setup, "jit", 8, traces)
    batch = setup[0]
    for _ in range(3):
        state, metrics = step(state, dp.put_batch(batch))
    assert len(traces) == 1
    assert int(jax.device_get(state.step)) == 4


def test_batch_must_divide_over_devices():
    with pytest.raises(ValueError, match="global batch 12 does not divide over 8 devices"):
        DataParallel("jit").check_batch_size(12)
    with pytest.raises(ValueError, match="unknown parallel strategy 'dp'; valid: jit, pmap"):
        DataParallel("dp")


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_no_implicit_transfers_in_the_hot_loop(setup, strategy):
    batch = setup[0]
    _, _, step, dp, state = _one_step(setup, strategy, 8)
    with jax.transfer_guard("disallow"):  # only the explicit batch upload may move data
        for _ in range(2):
            state, metrics = step(state, dp.put_batch(batch))
    assert np.isfinite(float(jax.device_get(metrics["loss"])))
