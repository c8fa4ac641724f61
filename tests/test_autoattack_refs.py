"""jaxcnn's AutoAttack against the reference implementation (fra31/auto-attack), from stored outputs.

``tests/refs/make_autoattack_refs.py`` ran the official code once in a PyTorch venv on a digits CNN
it trained and saved (``tests/data/autoattack_digits_cnn.pth``, read here with ``load_pretrained``)
and on the first 128 held-out digits it stored. Here, without PyTorch:

* float64, step for step: APGD's loss at every iterate from the same starting points (CE and the
  targeted DLR loss, L-inf and L2), and FAB-T's closest adversarial points (no random start), on 8
  images; FAB's two projections and Square's side schedule and L2 pattern on their own;
* float32, within the attacks' randomness (jaxcnn with seed 0 inside the reference's range over its
  seeds 0-4, widened by two examples of 128): APGD-CE alone under L-inf; with ``-m slow`` (about five
  minutes on 2 cores) the standard ensemble's robust accuracy after each attack and each attack alone,
  under L-inf (eps 3/255) and L2 (eps 0.2).
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers, load_pretrained
from jaxcnn.inputopt import apgd as A, fab, problem, square
from jaxcnn.inputopt.autoattack import autoattack
from tests.tiny_model import register

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
NORMS = {"Linf": "linf", "L2": "l2"}
BATCH = 32


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(DATA, "autoattack_refs.npz"))), json.load(open(os.path.join(DATA,
                                                                                                 "autoattack_refs.json")))


@pytest.fixture(scope="module")
def digits_cnn():
    register()
    return load_pretrained("tiny_cnn", os.path.join(DATA, "autoattack_digits_cnn.pth"))


class TinyCNN64(nn.Module):
    """tests/tiny_model.py's TinyCNN computing in float64 end to end (jaxcnn's layers keep batch norm and the
    logits in float32), on the same variables."""

    @nn.compact
    def __call__(self, x, train=False):
        kw = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        for i, ch in enumerate((8, 16)):
            x = nn.Conv(ch, (3, 3), padding=1, use_bias=False, name=f"conv{i}", **kw)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=f"bn{i}", **kw)(x))
            x = layers.max_pool(x, 2, 2)        # (flax's max_pool makes XLA all-gather its gradient over devices)
        return nn.Dense(10, name="fc", **kw)(jnp.mean(x, axis=(1, 2))), {}


@pytest.fixture(scope="module")
def float64_batch(ref, digits_cnn):
    """(model, float64 variables, images (8, 16, 16, 3), labels) of the reference's float64 runs."""
    arrays, _ = ref
    idx = arrays["float64_index"]
    x = (arrays["images"][idx].astype(np.float32) / 255).astype(np.float64)   # the reference's pixels: float32 k / 255
    return (TinyCNN64(), jax.tree.map(lambda a: np.asarray(a, np.float64), digits_cnn[1]), x,
            arrays["labels"][idx].astype(np.int32))


def test_the_float64_network_is_the_reference_network(ref, digits_cnn, float64_batch):
    arrays, summary = ref
    model, v64, x, y = float64_batch
    with jax.enable_x64(True):
        z = np.asarray(model.apply(v64, (jnp.asarray(x) - jnp.asarray((0.485, 0.456, 0.406)))
                                   / jnp.asarray((0.229, 0.224, 0.225)))[0])
    np.testing.assert_allclose(z, arrays["float64_logits"], rtol=1e-12, atol=1e-12)
    m, v = digits_cnn                      # and jaxcnn's own float32 model on the same weights
    np.testing.assert_allclose(np.asarray(problem.logits(m, v, jnp.asarray(x, jnp.float32))), z, atol=2e-4)
    clean = np.asarray(problem.logits(m, v, jnp.asarray(arrays["images"] / 255, jnp.float32))).argmax(1)
    np.testing.assert_array_equal(clean, arrays["clean_predictions"])
    assert np.mean(clean == arrays["labels"]) == pytest.approx(summary["standard"]["Linf"][0]["clean"], abs=1e-4)


@pytest.mark.parametrize("norm, loss", [("Linf", "ce"), ("Linf", "dlr-targeted"), ("L2", "ce"),
                                        ("L2", "dlr-targeted")])
def test_apgd_loss_curve_matches_the_reference_step_for_step(ref, float64_batch, norm, loss):
    arrays, summary = ref
    model, v64, x, y = float64_batch
    key = f"apgd_{norm}_{loss}"
    with jax.enable_x64(True):
        target = jnp.asarray(arrays["apgd_target"], jnp.int32) if loss != "ce" else None
        run = A.run_apgd(model, v64, jnp.asarray(x), jnp.asarray(y), jnp.asarray(arrays[f"apgd_start_{norm}"]),
                         eps=summary["curve_eps"][norm], norm=NORMS[norm], loss=loss, steps=100, target=target)
        curve, best, x_best, fooled = (np.asarray(a) for a in (run.losses, run.loss_best, run.x_best, run.fooled))
    want = arrays[f"{key}_curve"]
    assert curve.shape == want.shape == (101, 8)
    # equal to float64 rounding over the first ten steps; after that the L2 run on the targeted DLR loss
    # amplifies rounding (the gap grows ~10x every 10 steps to ~1e-7; jaxcnn against itself from a start
    # moved by 1e-15 drifts the same way, to ~1e-8); the other three stay within 1e-13 to the end
    np.testing.assert_allclose(curve[:11], want[:11], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(best, arrays[f"{key}_loss_best"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(x_best, arrays[f"{key}_x_best"], atol=1e-6)
    np.testing.assert_array_equal(fooled, arrays[f"{key}_fooled"])
    assert np.ptp(want) > 0.5 and np.any(np.diff(want, axis=0) < 0)     # a curve with ups and downs


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fab_targeted_matches_the_reference_in_float64(ref, float64_batch, norm):
    arrays, summary = ref
    model, v64, x, y = float64_batch
    with jax.enable_x64(True):
        adv, fooled, dist = fab.run_fab_targeted(model, v64, jnp.asarray(x), jnp.asarray(y),
                                                 jnp.asarray(arrays["apgd_target"], jnp.int32),
                                                 eps=1e9, norm=NORMS[norm], steps=100)
        adv, fooled, dist = np.asarray(adv), np.asarray(fooled), np.asarray(dist)
    want = arrays[f"fab_{norm}_dist"]
    found = want > 0
    assert found.sum() >= 6
    np.testing.assert_array_equal(fooled, found)
    np.testing.assert_allclose(dist[found], want[found], rtol=1e-10)
    np.testing.assert_allclose(adv, arrays[f"fab_{norm}_adv"], atol=1e-12)


def test_fab_projections_match_the_reference(ref):
    arrays, _ = ref
    t, w, b = arrays["proj_t"], arrays["proj_w"], arrays["proj_b"]
    with jax.enable_x64(True):
        linf = np.asarray(fab.project_linf(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
        l2 = np.asarray(fab.project_l2(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
    np.testing.assert_allclose(linf, arrays["proj_linf"], atol=1e-12)
    np.testing.assert_allclose(l2, arrays["proj_l2"], atol=1e-12)
    reached = np.abs(np.sum(w * (t + arrays["proj_l2"]), 1) - b) < 1e-9
    assert 10 < reached.sum() < len(b)             # both projections onto the plane and clipped ones


def test_square_schedule_and_pattern_match_the_reference(ref):
    arrays, _ = ref
    for norm in ("Linf", "L2"):
        np.testing.assert_array_equal(square.square_sizes(5000, 16, 16, NORMS[norm]), arrays[f"square_sizes_{norm}"])
    for s in (1, 2, 3, 5, 8, 11, 15):
        np.testing.assert_allclose(square.eta_pattern(s), arrays[f"square_eta_{s}"], rtol=1e-6, atol=1e-7)


def _within(got: float, runs: list[float], n: int, slack: int = 2) -> bool:
    """``got`` inside the reference's range over its seeds, widened by ``slack`` examples."""
    return min(runs) - slack / n - 1e-9 <= got <= max(runs) + slack / n + 1e-9


def _images(arrays):
    return arrays["images"].astype(np.float32) / 255, arrays["labels"]


def test_apgd_ce_alone_agrees_with_the_reference(ref, digits_cnn):
    arrays, summary = ref
    x, y = _images(arrays)
    rep = autoattack(*digits_cnn, x, y, summary["eps"]["Linf"], version="custom", attacks=["apgd-ce"], seed=0,
                     batch_size=BATCH)
    runs = [r["apgd-ce"] for r in summary["individual"]["Linf"]]
    assert _within(rep.rows[0].robust_accuracy, runs, len(y)), (rep.rows[0].robust_accuracy, runs)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_standard_ensemble_robust_accuracy_agrees_with_the_reference(ref, digits_cnn, norm):
    arrays, summary = ref
    x, y = _images(arrays)
    got = autoattack(*digits_cnn, x, y, summary["eps"][norm], norm=NORMS[norm], seed=0, batch_size=BATCH).rows[0]
    runs = summary["standard"][norm]
    assert got.clean_accuracy == pytest.approx(runs[0]["clean"], abs=1e-4)   # the log's percentages: 2 decimals
    for attack in ("apgd-ce", "apgd-t", "fab-t", "square"):
        assert _within(got.robust_after[attack], [r[attack] for r in runs], len(y)), (attack, got.robust_after, runs)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_each_attack_alone_agrees_with_the_reference(ref, digits_cnn, norm):
    arrays, summary = ref
    x, y = _images(arrays)
    for attack in ("apgd-ce", "apgd-t", "fab-t", "square"):
        rep = autoattack(*digits_cnn, x, y, summary["eps"][norm], norm=NORMS[norm], version="custom", attacks=[attack],
                         seed=0, batch_size=BATCH)
        runs = [r[attack] for r in summary["individual"][norm]]
        assert _within(rep.rows[0].robust_accuracy, runs, len(y)), (attack, rep.rows[0].robust_accuracy, runs)
