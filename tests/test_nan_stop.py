"""A diverging run names the step that diverged and a checkpoint that is truly good."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.training import (Checkpointer, OptimizerConfig, TrainingDiverged, create_train_state, load_config,
                             make_optimizer, train)
from jaxcnn.training.checkpoint import PARAM_BOUND, checkpoint_steps, diverged_message, state_health
from tests.tiny_model import TinyCNN, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")


def _restore(directory, step):
    register()
    target = create_train_state(TinyCNN(dropout_rate=0.1), make_optimizer(OptimizerConfig(schedule="step"), 1, 1),
                                (16, 16, 3), seed=0)
    ckpt = Checkpointer(directory, every_steps=1, create=False)
    state, meta = ckpt.restore(target, step)
    ckpt.close()
    return state


def test_diverging_run_names_the_step_and_a_good_checkpoint(tmp_path):
    register()
    # the learning rate jumps x1e6 at step 4 (0.1 epoch of 44 steps): the parameters grow for a few finite
    # steps before the loss is NaN; a checkpoint after every step
    cfg = load_config(RECIPE).with_overrides([
        f"workdir={tmp_path}", "optimizer.schedule='step'", "optimizer.decay_epochs=(0.1,)",
        "optimizer.decay_factor=1e6", "checkpoint_every_steps=1", "keep_checkpoints=20", "log_every_steps=100"])
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    m = re.search(r"step (\d+) were NaN/Inf.*the state after step (\d+).*last good checkpoint: step (\d+) "
                  r"\(max \|param\| ([0-9.e+-]+)\)", msg)
    assert m, msg
    bad, before, good = int(m[1]), int(m[2]), int(m[3])
    assert before == bad - 1 and good < bad
    directory = os.path.join(str(tmp_path), "checkpoints")
    steps = checkpoint_steps(directory)
    assert max(steps) < bad      # no checkpoint is written after a step that was not checked
    state = _restore(directory, good)
    assert int(state.step) == good   # checkpoint S holds the state after S steps
    finite, peak = state_health(state)
    assert finite and peak <= PARAM_BOUND and float(m[4]) == pytest.approx(peak, rel=0.05)
    # every newer checkpoint is named as not good, and is not: non-finite or past the bound
    newer = [s for s in steps if s > good]
    assert newer, "the run should leave exploded checkpoints behind for this test to mean anything"
    for s in newer:
        assert re.search(rf"not good .*\b{s} \(", msg), (s, msg)
        f, p = state_health(_restore(directory, s))
        assert not f or p > PARAM_BOUND


def test_diverged_message_rejects_exploded_and_non_finite_checkpoints(tmp_path):
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    state = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0)
    scaled = lambda f: state.replace(params=jax.tree_util.tree_map(f, state.params))  # noqa: E731
    ckpt = Checkpointer(str(tmp_path), every_steps=1, keep=10)
    ckpt.save(2, state.replace(step=jnp.int32(2)), {"model": "tiny_cnn"}, force=True)
    ckpt.save(4, scaled(lambda p: p * 0 + 5e34).replace(step=jnp.int32(4)), {"model": "tiny_cnn"}, force=True)
    ckpt.save(6, scaled(lambda p: p * np.nan).replace(step=jnp.int32(6)), {"model": "tiny_cnn"}, force=True)
    msg = diverged_message(ckpt, 7, state)
    ckpt.close()
    assert "step 7 were NaN/Inf" in msg and "the state after step 6" in msg
    assert re.search(r"last good checkpoint: step 2 \(max \|param\| [0-9.]+\)", msg), msg
    assert "step 6 (max |param| nan, non-finite arrays), 4 (max |param| 5e+34)" in msg, msg
    assert "> 1e+06" in msg
