"""Train/eval step internals: losses, metrics, NaN guard, accumulation, aux heads, determinism."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.training import OptimizerConfig, create_train_state, make_eval_step, make_optimizer, make_train_step
from jaxcnn.training.steps import AUX_LOSS_WEIGHTS, cross_entropy, model_input, topk_correct
from tests.tiny_model import TinyCNN


class NoBN(nn.Module):
    """A model without batch norm (accumulation equals the full batch exactly) with an aux head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Conv(4, (3, 3), name="conv")(x)).mean(axis=(1, 2))
        aux = nn.Dense(10, name="aux")(h)
        feats = {"aux1": aux} if train else {}
        return nn.Dense(10, name="fc")(h), feats


RNG = np.random.default_rng(0)
BATCH = {"image": jnp.asarray(RNG.standard_normal((8, 8, 8, 3)), jnp.float32),
         "label": jnp.asarray(RNG.integers(0, 10, 8), jnp.int32)}
TX = make_optimizer(OptimizerConfig(learning_rate=0.1, weight_decay=1e-3, schedule="constant"), 10, 100)


def test_cross_entropy_and_label_smoothing():
    logits = RNG.standard_normal((5, 7))
    labels = RNG.integers(0, 7, 5)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    for eps in (0.0, 0.1):
        target = (1 - eps) * np.eye(7)[labels] + eps / 7
        want = -(target * logp).sum(1)
        got = cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), eps)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_topk_and_model_input():
    logits = RNG.standard_normal((20, 10))
    labels = RNG.integers(0, 10, 20)
    for k in (1, 5):
        want = [labels[i] in np.argsort(-logits[i])[:k] for i in range(20)]
        np.testing.assert_array_equal(np.asarray(topk_correct(jnp.asarray(logits), jnp.asarray(labels), k)), want)
    pix = np.full((1, 2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(model_input(jnp.asarray(pix))[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) /
                               np.array([0.229, 0.224, 0.225]), rtol=1e-6)
    f = jnp.ones((1, 2, 2, 3))
    assert model_input(f) is f


def test_step_updates_and_nan_leaves_state_unchanged():
    state = create_train_state(TinyCNN(), TX, (8, 8, 3), seed=0)
    step = jax.jit(make_train_step(TinyCNN(), TX))
    new, m = step(state, BATCH)
    assert int(new.step) == 1 and set(m) == {"loss", "top1", "top5", "finite"} and float(m["finite"]) == 1
    assert not np.allclose(new.params["fc"]["kernel"], state.params["fc"]["kernel"])
    assert not np.allclose(new.batch_stats["bn0"]["mean"], state.batch_stats["bn0"]["mean"])
    bad = {**BATCH, "image": BATCH["image"].at[0, 0, 0, 0].set(jnp.nan)}
    same, m = step(state, bad)
    assert float(m["finite"]) == 0
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


class Deep(nn.Module):
    """``depth`` dense layers: ``2 * depth`` parameter arrays."""

    depth: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.mean(axis=(1, 2))
        for i in range(self.depth):
            h = nn.relu(nn.Dense(8, name=f"fc{i}")(h))
        return nn.Dense(10, name="out")(h), {}


def test_the_guarded_step_compiles_to_hlo_linear_in_the_parameter_arrays():
    # the guard is one predicate over every array; where(pred, new, old) per leaf lets XLA fuse the
    # predicate's chain of one add per array into each leaf's update: HLO quadratic in the arrays; one
    # lax.cond keeps it linear (python -m benchmarks.cpu.nan_guard compares the compile times)
    lines = {}
    for depth in (12, 24):
        state = create_train_state(Deep(depth), TX, (8, 8, 3), seed=0)
        hlo = jax.jit(make_train_step(Deep(depth), TX)).lower(state, BATCH).compile().as_text()
        lines[depth] = len(hlo.splitlines())
    assert lines[24] < 2.2 * lines[12], lines     # linear: about 2x for twice the arrays


def test_accumulation_equals_full_batch_without_bn():
    state = create_train_state(NoBN(), TX, (8, 8, 3), seed=0)
    one = jax.jit(make_train_step(NoBN(), TX, aux_weights={}))(state, BATCH)[0]
    two = jax.jit(make_train_step(NoBN(), TX, accum_steps=2, aux_weights={}))(state, BATCH)[0]
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(two.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_aux_loss_is_weighted():
    state = create_train_state(NoBN(), TX, (8, 8, 3), seed=0)
    _, m = jax.jit(make_train_step(NoBN(), TX))(state, BATCH)
    logits, feats = NoBN().apply({"params": state.params}, BATCH["image"], train=True)
    want = (cross_entropy(logits, BATCH["label"]).mean()
            + AUX_LOSS_WEIGHTS["aux1"] * cross_entropy(feats["aux1"], BATCH["label"]).mean())
    assert float(m["loss"]) == pytest.approx(float(want), rel=1e-5)


def test_dropout_masks_change_per_step_and_replay_exactly():
    model = TinyCNN(dropout_rate=0.5)
    state = create_train_state(model, TX, (8, 8, 3), seed=0)
    step = jax.jit(make_train_step(model, TX))
    a1, ma = step(state, BATCH)
    a2, _ = step(state, BATCH)
    np.testing.assert_array_equal(a1.params["fc"]["kernel"], a2.params["fc"]["kernel"])  # same step: same masks
    shifted = state.replace(step=state.step + 1)
    b, mb = step(shifted, BATCH)
    assert float(ma["loss"]) != float(mb["loss"])  # same weights and data, another step: other masks


def test_eval_step_ignores_masked_examples():
    state = create_train_state(TinyCNN(), TX, (8, 8, 3), seed=0)
    ev = jax.jit(make_eval_step(TinyCNN()))
    mask = jnp.asarray([1, 1, 1, 0, 0, 1, 0, 1], jnp.float32)
    masked = ev(state.variables, {**BATCH, "mask": mask})
    keep = np.asarray(mask, bool)
    sub = ev(state.variables, {"image": BATCH["image"][keep], "label": BATCH["label"][keep]})
    for k in ("loss", "top1", "top5", "count"):
        assert float(masked[k]) == pytest.approx(float(sub[k]), rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_all_finite_sees_one_bad_element_in_any_leaf(bad):
    from jaxcnn.training.steps import _all_finite
    tree = {"w": jnp.full((64, 33), 3e38, jnp.float32), "b": jnp.ones((7,), jnp.bfloat16)}   # huge but finite
    if bad is not None:
        tree["b"] = tree["b"].at[5].set(bad)
    assert bool(jax.jit(_all_finite)(tree)) == (bad is None)
