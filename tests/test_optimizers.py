"""AdamW, LARS, LAMB and gradient clipping against their published update rules in NumPy float64.

The pytree has a conv kernel, a conv bias and a BatchNorm scale and bias, so every decay mask
and LARS's exclusion of biases and norms from the trust ratio is exercised. jax runs in float64
(``jax.enable_x64``) so the comparison is tight.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.training.optimizer import (OptimizerConfig, decay_mask, make_optimizer, parameter_kinds,
                                       set_plateau_factor)

SHAPES = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "bn": {"scale": (4,), "bias": (4,)}}
KINDS = {("conv", "kernel"): "kernel", ("conv", "bias"): "bias", ("bn", "scale"): "norm", ("bn", "bias"): "norm"}
DECAYED = {"kernels": {"kernel"}, "kernels+biases": {"kernel", "bias"}, "all": {"kernel", "bias", "norm"}}
STEPS = 4


def _flat(tree):
    return {(a, b): np.asarray(v, np.float64) for a, sub in tree.items() for b, v in sub.items()}


def _tree(flat):
    out = {}
    for (a, b), v in flat.items():
        out.setdefault(a, {})[b] = jnp.asarray(v, jnp.float64)
    return out


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    w = {(a, b): rng.standard_normal(s) for a, sub in SHAPES.items() for b, s in sub.items()}
    grads = [{k: rng.standard_normal(v.shape) for k, v in w.items()} for _ in range(STEPS)]
    return w, grads


def _run_optax(cfg, w, grads):
    with jax.enable_x64(True):
        tx = make_optimizer(cfg, 10, 100)
        params = _tree(w)
        state = tx.init(params)
        for g in grads:
            upd, state = tx.update(_tree(g), state, params)
            params = jax.tree_util.tree_map(lambda p, u: p + u, params, upd)
        return _flat(params)


def _norm(x):
    return float(np.sqrt(np.sum(x * x)))


def _adam_direction(m, v, g, t, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return m, v, (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


def _numpy_adamw(w, grads, lr, wd, decayed, b1=0.9, b2=0.999, eps=1e-8):
    """Loshchilov & Hutter, Algorithm 2 (torch.optim.AdamW): decoupled decay scaled by the learning rate."""
    w = dict(w)
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, g in enumerate(grads, start=1):
        for k in w:
            m[k], v2[k], r = _adam_direction(m[k], v2[k], g[k], t, b1, b2, eps)
            w[k] = w[k] - lr * (r + (wd * w[k] if KINDS[k] in decayed else 0.0))
    return w


def _numpy_lamb(w, grads, lr, wd, decayed, b1=0.9, b2=0.999, eps=1e-6):
    """You et al. 2019, Algorithm 2: Adam direction plus decay, scaled per layer by |w| / |update|."""
    w = dict(w)
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, g in enumerate(grads, start=1):
        for k in w:
            m[k], v2[k], r = _adam_direction(m[k], v2[k], g[k], t, b1, b2, eps)
            u = r + (wd * w[k] if KINDS[k] in decayed else 0.0)
            ratio = _norm(w[k]) / _norm(u) if _norm(w[k]) > 0 and _norm(u) > 0 else 1.0
            w[k] = w[k] - lr * ratio * u
    return w


def _numpy_lars(w, grads, lr, wd, decayed, eta, momentum, eps=0.0):
    """MLPerf's ResNet-50 LARS (TensorFlow's LARSOptimizer, skipping batch_normalization and bias): kernels
    take the learning rate times eta |w| / (|g| + wd |w| + eps); the others plain momentum SGD; decay where
    the mask says; the momentum accumulates lr * update."""
    w = dict(w)
    vel = {k: np.zeros_like(v) for k, v in w.items()}
    for g in grads:
        for k in w:
            d = wd if KINDS[k] in decayed else 0.0
            scaled = lr
            if KINDS[k] == "kernel":
                scaled = lr * eta * _norm(w[k]) / (_norm(g[k]) + d * _norm(w[k]) + eps)
            vel[k] = momentum * vel[k] + scaled * (g[k] + d * w[k])
            w[k] = w[k] - vel[k]
    return w


def test_parameter_kinds_and_masks():
    w, _ = _problem()
    params = {a: {b: jnp.asarray(w[a, b], jnp.float32) for b in sub} for a, sub in SHAPES.items()}
    assert _flat_kinds(parameter_kinds(params)) == KINDS
    for decay, kinds in DECAYED.items():
        mask = decay_mask(params, decay)
        assert {k for k, kind in KINDS.items() if kind in kinds} == {(a, b) for a, s in mask.items()
                                                                      for b, on in s.items() if on}
    with pytest.raises(ValueError, match="unknown decay mask 'norms'; valid: kernels, kernels\\+biases, all"):
        OptimizerConfig(decay="norms")


def _flat_kinds(tree):
    return {(a, b): v for a, sub in tree.items() for b, v in sub.items()}


@pytest.mark.parametrize("decay", ["kernels", "all"])
def test_adamw_matches_decoupled_formula(decay):
    w, grads = _problem(1)
    cfg = OptimizerConfig(name="adamw", learning_rate=0.01, weight_decay=0.05, decay=decay, schedule="constant",
                          b1=0.8, b2=0.99)
    got = _run_optax(cfg, w, grads)
    want = _numpy_adamw(w, grads, 0.01, 0.05, DECAYED[decay], b1=0.8, b2=0.99)
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=str(k))
    moved = _numpy_adamw(w, grads, 0.01, 0.05, DECAYED["kernels+biases" if decay == "kernels" else "kernels"])
    assert not all(np.allclose(got[k], moved[k], rtol=1e-9) for k in w)   # the mask matters


@pytest.mark.parametrize("decay", ["kernels", "kernels+biases"])
def test_lamb_matches_layerwise_formula(decay):
    w, grads = _problem(2)
    cfg = OptimizerConfig(name="lamb", learning_rate=0.02, weight_decay=0.01, decay=decay, schedule="constant")
    got = _run_optax(cfg, w, grads)
    want = _numpy_lamb(w, grads, 0.02, 0.01, DECAYED[decay])
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=str(k))


@pytest.mark.parametrize("decay", ["kernels", "all"])
def test_lars_matches_mlperf_formula(decay):
    w, grads = _problem(3)
    cfg = OptimizerConfig(name="lars", learning_rate=2.0, momentum=0.9, weight_decay=5e-5, decay=decay,
                          trust_coefficient=0.001, schedule="constant")
    got = _run_optax(cfg, w, grads)
    want = _numpy_lars(w, grads, 2.0, 5e-5, DECAYED[decay], eta=0.001, momentum=0.9)
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=str(k))
    # the trust ratio reaches kernels only: the bias moves by plain momentum SGD, the kernel by far less
    assert _norm(got[("conv", "bias")] - w[("conv", "bias")]) > 100 * _norm(got[("conv", "kernel")] -
                                                                           w[("conv", "kernel")]) / 6


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars", "lamb"])
def test_clipping_by_global_norm_comes_first(name):
    w, grads = _problem(4)
    total = np.sqrt(sum(np.sum(g * g) for g in grads[0].values()))
    clipped = [{k: g * (0.5 / total) for k, g in grads[0].items()}]
    base = dict(learning_rate=0.1, weight_decay=0.01, schedule="constant", name=name)
    got = _run_optax(OptimizerConfig(clip_grad_norm=0.5, **base), w, grads[:1])
    want = _run_optax(OptimizerConfig(**base), w, clipped)
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=str(k))
    loose = _run_optax(OptimizerConfig(clip_grad_norm=10 * total, **base), w, grads[:1])
    plain = _run_optax(OptimizerConfig(**base), w, grads[:1])
    for k in w:
        np.testing.assert_allclose(loose[k], plain[k], rtol=1e-12, atol=1e-14)   # under the bound: untouched


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars", "lamb"])
def test_schedule_and_plateau_reach_every_optimizer(name):
    w, grads = _problem(5)
    with jax.enable_x64(True):
        params, g = _tree(w), _tree(grads[0])
        warm = make_optimizer(OptimizerConfig(name=name, schedule="constant", warmup_epochs=1), 10, 100)
        upd, _ = warm.update(g, warm.init(params), params)   # step 0 of a linear warm-up: lr 0
        assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree_util.tree_leaves(upd))
        tx = make_optimizer(OptimizerConfig(name=name, schedule="plateau"), 10, 100)
        full, _ = tx.update(g, tx.init(params), params)
        tenth, _ = tx.update(g, set_plateau_factor(tx.init(params), 0.1), params)
        for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(tenth)):
            np.testing.assert_allclose(b, 0.1 * a, rtol=1e-12)
            assert float(jnp.abs(a).max()) > 0


def test_sgd_default_chain_unchanged():
    """The default optimizer is the same three optax links as before the other optimizers existed."""
    cfg = OptimizerConfig(learning_rate=0.1, weight_decay=1e-4, schedule="constant")
    w, grads = _problem(6)
    with jax.enable_x64(True):
        links = len(make_optimizer(cfg, 10, 100).init(_tree(w)))
    got = _run_optax(cfg, w, grads)
    vel = {k: np.zeros_like(v) for k, v in w.items()}
    want = dict(w)
    for g in grads:
        for k in w:
            d = g[k] + (1e-4 * want[k] if KINDS[k] == "kernel" else 0.0)
            vel[k] = 0.9 * vel[k] + d
            want[k] = want[k] - 0.1 * vel[k]
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14)
    assert links == 3


def test_unknown_optimizer_lists_valid_ones():
    with pytest.raises(ValueError, match="^unknown optimizer 'adam'; valid: sgd, adamw, lars, lamb$"):
        OptimizerConfig(name="adam")
    with pytest.raises(ValueError, match="clip_grad_norm >= 0"):
        OptimizerConfig(clip_grad_norm=-1.0)
    # an option the chosen optimizer has no use for is refused, not ignored
    with pytest.raises(ValueError, match="^eps applies to adamw, lamb and lars; sgd has none$"):
        OptimizerConfig(eps=1e-8)
    with pytest.raises(ValueError, match="^nesterov applies to sgd, adamw and lars, not lamb$"):
        OptimizerConfig(name="lamb", nesterov=True)
