"""Adversarial examples, patches, fooling images and robustness on a CNN trained on real digits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import attacks as A
from jaxcnn.inputopt.fooling import fool_evolution, fool_gradient, noise_probe
from jaxcnn.inputopt.patch import patch_success, train_patch
from jaxcnn.inputopt.robustness import robustness_curve
from tests.trained_digits import SIZE, digits_classifier


@pytest.fixture(scope="module")
def clf():
    return digits_classifier()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 16), eps=st.floats(0.0, 0.3), norm=st.sampled_from(["linf", "l2"]),
       random_start=st.booleans())
def test_budget_and_range_hold_for_random_inputs(seed, eps, norm, random_start):
    model, variables, *_ = digits_classifier()
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(8, SIZE, SIZE, 3)).astype(np.float32) ** rng.uniform(0.2, 5)  # mass near 0 or 1 too
    labels = rng.integers(0, 10, 8)
    res = A.pgd(model, variables, x, labels, eps=eps, steps=2, norm=norm, random_start=random_start, key=seed)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    bound = res.linf if norm == "linf" else res.l2
    assert np.all(bound <= eps * (1 + 1e-5) + 1e-6)


def test_fgsm_equals_one_pgd_step_and_a_hand_computation(clf):
    model, variables, x, y, _ = clf
    x, y, eps = x[:16], y[:16], 0.03
    fg = A.fgsm(model, variables, x, y, eps=eps)
    one = A.pgd(model, variables, x, y, eps=eps, steps=1, step_size=eps, random_start=False)
    np.testing.assert_array_equal(fg.images, one.images)
    loss = lambda x: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
        model.apply(variables, preprocess(x))[0], jnp.asarray(y)))
    by_hand = np.clip(x + eps * np.sign(np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x)))), 0, 1)
    np.testing.assert_allclose(fg.images, by_hand, atol=1e-6)


def test_pgd_drives_accuracy_to_near_zero_and_beats_fgsm(clf):
    model, variables, x, y, clean = clf
    assert clean > 0.9
    x, y = x[:128], y[:128]
    rows = robustness_curve(model, variables, x, y, attack="pgd", epsilons=[0.0, 4 / 255, 8 / 255], steps=10)
    assert rows[0]["accuracy"] > 0.9
    assert rows[-1]["accuracy"] < 0.05, rows
    fg = robustness_curve(model, variables, x, y, attack="fgsm", epsilons=[4 / 255])
    assert rows[1]["accuracy"] <= fg[0]["accuracy"]


def test_targeted_attacks_reach_their_target(clf):
    model, variables, x, y, _ = clf
    target = (y[:32] + 3) % 10
    for res in (A.pgd(model, variables, x[:32], y[:32], eps=0.1, steps=20, target=target),
                A.pgd(model, variables, x[:32], y[:32], eps=2.0, steps=20, norm="l2", target=target),
                A.carlini_wagner(model, variables, x[:32], y[:32], target=target, steps=60, binary_search_steps=3)):
        assert res.success_rate > 0.9
        np.testing.assert_array_equal(res.predictions[res.success], target[res.success])


def test_minimal_perturbation_attacks(clf):
    model, variables, x, y, _ = clf
    x, y = x[:32], y[:32]
    df = A.deepfool(model, variables, x, y)
    cw = A.carlini_wagner(model, variables, x, y, steps=60, binary_search_steps=3)
    fg = A.fgsm(model, variables, x, y, eps=0.1)
    for res in (df, cw):
        assert res.success_rate > 0.9
        assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
        assert np.median(res.l2[res.success]) < np.median(fg.l2)   # far smaller than a fixed-budget sign step


def test_attacks_spread_over_devices(clf):
    model, variables, x, y, _ = clf
    res = A.pgd(model, variables, x[:16], y[:16], eps=0.02, steps=2)
    assert len(res.images.sharding.device_set) == len(jax.devices()) == 8


def test_adversarial_patch_raises_its_target_on_held_out_images(clf):
    model, variables, x, y, _ = clf
    patch, losses = train_patch(model, variables, x[:200], 3, steps=150, scale=(0.3, 0.4))
    rates = patch_success(model, variables, x[200:], y[200:], patch, 3, scale=(0.3, 0.4))
    assert patch.shape[-1] == 3 and losses[-1] < losses[0]
    assert rates["target_rate_patched"] > rates["target_rate_clean"] + 0.3, rates


@pytest.mark.parametrize("method", ["gradient", "direct", "cppn"])
def test_fooling_images_reach_99_percent(clf, method):
    model, variables, *_ = clf
    classes = np.array([0, 2, 5, 7])
    if method == "gradient":
        res = fool_gradient(model, variables, classes, size=SIZE, steps=60)
    else:
        res = fool_evolution(model, variables, classes, size=SIZE, encoding=method, population=32, generations=250)
    assert np.all(res.confidence >= 0.99), res.confidence
    assert res.images.shape == (4, SIZE, SIZE, 3)


def test_noise_probe_shows_confidence_thresholding_fails(clf):
    model, variables, x, *_ = clf
    probe = noise_probe(model, variables, x, n=128)
    assert 0 < probe["threshold"] < 1
    assert probe["noise_passing_threshold"] > 0.2      # a large share of pure noise passes the threshold
    assert sum(probe["predicted"]) == 128


def test_bad_input_is_one_line(clf):
    model, variables, x, y, _ = clf
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0, got -0.1"):
        A.pgd(model, variables, x[:2], y[:2], eps=-0.1)
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        A.fgsm(model, variables, x[:2], y[:2], eps=float("inf"))
    with pytest.raises(ValueError, match="target class out of range: got 10..10, the model has 10 classes"):
        A.pgd(model, variables, x[:2], y[:2], eps=0.1, target=10)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        A.pgd(model, variables, x[:2] * 255, y[:2], eps=0.1)
    with pytest.raises(ValueError, match="target class out of range"):
        fool_gradient(model, variables, [11], size=SIZE)
    with pytest.raises(ValueError, match="target class out of range"):
        train_patch(model, variables, x[:4], 10)


def test_adversarial_training_step_trains_on_pgd_examples(clf):
    from jaxcnn.training.state import create_train_state
    from jaxcnn.training.steps import make_train_step
    model, variables, x, y, _ = clf
    tx = optax.sgd(0.01)
    state = create_train_state(model, tx, (SIZE, SIZE, 3), seed=0, variables=variables)
    batch = {"image": jnp.asarray(np.rint(x[:32] * 255), jnp.uint8), "label": jnp.asarray(y[:32])}
    _, clean = jax.jit(make_train_step(model, tx))(state, batch)
    _, adv = jax.jit(make_train_step(model, tx, adversarial={"eps": 8 / 255, "steps": 3}))(state, batch)
    assert float(adv["loss"]) > 2 * float(clean["loss"])      # the step saw PGD examples, not the clean batch
    with pytest.raises(ValueError, match="unknown adversarial option"):
        make_train_step(model, tx, adversarial={"epsilon": 0.1})


def test_adversarial_training_is_a_train_option():
    from jaxcnn.training.config import TrainConfig
    cfg = TrainConfig().with_overrides(["adversarial.eps=0.03", "adversarial.steps=2"])
    assert cfg.adversarial == {"eps": 0.03, "steps": 2}


def test_repeated_calls_reuse_their_compiled_forward(clf):
    """robustness_curve's clean rows, noise_probe and channel_maps compile once per model (and layer), not
    once per call."""
    from jaxcnn.inputopt import inspection, problem
    model, variables, x, y, _ = clf
    x, y = x[:16], y[:16]
    fns = (problem.logits, inspection._channel_map)

    def calls():
        robustness_curve(model, variables, x, y, epsilons=[0.0])
        noise_probe(model, variables, x, n=16)
        for channel in (0, 1):
            assert inspection.channel_maps(model, variables, x, "block0", channel).shape[0] == 16

    calls()
    sizes = [f._cache_size() for f in fns]
    calls()
    assert [f._cache_size() for f in fns] == sizes and min(sizes) >= 1
