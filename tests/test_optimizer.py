"""The optax chain against torch's SGD formula; schedules; plateau control; masked L2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.training.optimizer import (OptimizerConfig, PlateauControl, learning_rate_schedule, make_optimizer,
                                       plateau_factor, set_plateau_factor)

PARAMS = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)}, "bn": {"scale": jnp.ones(4)}}


def test_l2_decay_only_on_kernels():
    cfg = OptimizerConfig(learning_rate=0.1, momentum=0.9, weight_decay=0.01, schedule="constant")
    tx = make_optimizer(cfg, 10, 100)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * 0.01 * np.ones((3, 3, 2, 4)), rtol=1e-6)
    assert float(jnp.abs(updates["conv"]["bias"]).max()) == 0 and float(jnp.abs(updates["bn"]["scale"]).max()) == 0


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_follows_torch(nesterov):
    cfg = OptimizerConfig(learning_rate=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-3,
                          schedule="constant")
    tx = make_optimizer(cfg, 10, 100)
    w = {"k": jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)}
    state = tx.init(w)
    wn, v = np.asarray(w["k"], np.float64), np.zeros((4, 3))
    rng = np.random.default_rng(1)
    for _ in range(3):
        g = rng.standard_normal((4, 3))
        upd, state = tx.update({"k": jnp.asarray(g, jnp.float32)}, state, w)
        w = {"k": w["k"] + upd["k"]}
        d = g + 1e-3 * wn  # torch.optim.SGD: weight decay, momentum buffer, (Nesterov) step
        v = 0.9 * v + d
        wn = wn - 0.05 * (d + 0.9 * v if nesterov else v)
    np.testing.assert_allclose(w["k"], wn, rtol=1e-5, atol=1e-6)


def test_schedules():
    step = OptimizerConfig(learning_rate=0.1, schedule="step", decay_epochs=(2, 4), decay_factor=0.1)
    s = learning_rate_schedule(step, 10, 60)
    assert [round(float(s(i)), 6) for i in (0, 19, 20, 39, 40, 59)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    cos = learning_rate_schedule(OptimizerConfig(learning_rate=0.2, schedule="cosine"), 10, 100)
    vals = np.array([float(cos(i)) for i in range(0, 101, 10)])
    assert vals[0] == pytest.approx(0.2) and vals[-1] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(vals) <= 0)
    assert float(cos(50)) == pytest.approx(0.1, rel=1e-5)
    warm = learning_rate_schedule(OptimizerConfig(learning_rate=0.4, schedule="constant", warmup_epochs=1), 10, 100)
    assert [float(warm(i)) for i in (0, 5, 10, 50)] == pytest.approx([0.0, 0.2, 0.4, 0.4])


def test_poly_schedule_is_mlperfs():
    """MLPerf's ResNet-50 LARS schedule (the reference's poly_rate_schedule): lr * step / warm-up steps, then
    end + (lr - end) * (1 - (step - warm-up) / (total - warm-up + 1)) ** 2, written out in float64."""
    cfg = OptimizerConfig(learning_rate=10.5, schedule="poly", warmup_epochs=2, end_learning_rate=1e-4)
    per_epoch, total = 25, 37 * 25
    s = learning_rate_schedule(cfg, per_epoch, total)
    warm, decay = 2 * per_epoch, total - 2 * per_epoch + 1

    def want(step):
        if step <= warm:
            return 10.5 * step / warm
        return 1e-4 + (10.5 - 1e-4) * (1 - (step - warm) / decay) ** 2
    steps = [0, 1, 25, 49, 50, 51, 300, 600, total - 1]
    np.testing.assert_allclose([float(s(i)) for i in steps], [want(i) for i in steps], rtol=2e-6, atol=1e-7)
    cubic = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, schedule="poly", poly_power=3.0,
                                                   end_learning_rate=0.0), 10, 100)
    assert float(cubic(50)) == pytest.approx((1 - 50 / 101) ** 3, rel=1e-6)


def test_plateau_control_divides_by_ten_after_patience():
    tx = make_optimizer(OptimizerConfig(schedule="plateau", learning_rate=0.1, weight_decay=0.0), 10, 100)
    opt = tx.init(PARAMS)
    ctl = PlateauControl(factor=0.1, patience=1, min_delta=0.01)
    for err, want in [(0.5, 1.0), (0.4, 1.0), (0.395, 1.0), (0.41, 0.1), (0.3, 0.1)]:
        opt = ctl.update(err, opt)
        assert plateau_factor(opt) == pytest.approx(want)
    clone = PlateauControl()
    clone.load_state_dict(ctl.state_dict())
    assert (clone.best, clone.bad) == (ctl.best, ctl.bad)
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    full, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    tenth, _ = tx.update(grads, set_plateau_factor(tx.init(PARAMS), 0.1), PARAMS)
    np.testing.assert_allclose(tenth["conv"]["kernel"], 0.1 * full["conv"]["kernel"], rtol=1e-6)


def test_bad_config_is_one_line():
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid: constant, step, cosine, poly, plateau"):
        OptimizerConfig(schedule="linear")
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        OptimizerConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="momentum in"):
        OptimizerConfig(momentum=1.0)
