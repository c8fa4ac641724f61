"""Mixup / cutmix in the train step against a NumPy transcription of timm's ``Mixup`` (batch mode):
box and lambda correction, pixels, soft targets with label smoothing, the draws' rates, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.sources import digits
from jaxcnn.training import OptimizerConfig, create_train_state, make_optimizer
from jaxcnn.training.mixup import MixConfig, apply_mix, check_mix, cutmix_box, mix_batch, mix_draws
from jaxcnn.training.steps import make_train_step
from tests.tiny_model import TinyCNN


def np_rand_bbox(h, w, lam, cy, cx):
    """timm.data.mixup.rand_bbox + cutmix_bbox_and_lam(correct_lam=True), the centre given."""
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    yl, yh = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    xl, xh = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    return (yl, yh, xl, xh), 1.0 - (yh - yl) * (xh - xl) / float(h * w)


def np_mixup_target(labels, num_classes, lam, smoothing):
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = np.full((len(labels), num_classes), off)
    y1[np.arange(len(labels)), labels] = on
    return y1 * lam + y1[::-1] * (1.0 - lam)


def test_cutmix_box_and_corrected_lambda_match_timm():
    rng = np.random.default_rng(0)
    for h, w in ((5, 5), (7, 31), (16, 16), (24, 9), (39, 40), (32, 17)):   # one compiled program per image shape
        lam = rng.uniform(0.01, 0.99, 40).astype(np.float32)
        cy, cx = rng.integers(0, h, 40).astype(np.int32), rng.integers(0, w, 40).astype(np.int32)
        *got, corrected = jax.jit(jax.vmap(lambda a, b, c: cutmix_box(a, b, c, h, w)))(lam, cy, cx)
        for i in range(len(lam)):
            box, want = np_rand_bbox(h, w, float(lam[i]), int(cy[i]), int(cx[i]))
            assert tuple(int(v[i]) for v in got) == tuple(int(v) for v in box), (h, w, lam[i], cy[i], cx[i])
            assert float(corrected[i]) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("cut", [False, True])
def test_pixels_and_soft_targets_match_numpy(cut):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 12, 10, 3)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    lam, cy, cx, smoothing = 0.63, 4, 8, 0.1
    draws = {"apply": jnp.bool_(True), "cutmix": jnp.bool_(cut), "lam": jnp.float32(lam), "cy": jnp.int32(cy),
             "cx": jnp.int32(cx)}
    out, targets, used = apply_mix(jnp.asarray(images), jnp.asarray(labels), 5, draws, smoothing)
    want = images.astype(np.float64).copy()
    if cut:
        (yl, yh, xl, xh), lam = np_rand_bbox(12, 10, lam, cy, cx)
        want[:, yl:yh, xl:xh] = images[::-1][:, yl:yh, xl:xh]
        assert 0 < (yh - yl) * (xh - xl) < 120   # the box is clipped at the right edge, not empty
    else:
        want = lam * want + (1 - lam) * images[::-1].astype(np.float64)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-6)
    assert float(used) == pytest.approx(lam, abs=1e-6)
    np.testing.assert_allclose(np.asarray(targets), np_mixup_target(labels, 5, lam, smoothing), atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, atol=1e-6)


def test_unmixed_batch_keeps_pixels_and_smooths_labels():
    images = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8, 8, 3)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 3])
    draws = {"apply": jnp.bool_(False), "cutmix": jnp.bool_(False), "lam": jnp.float32(1.0), "cy": jnp.int32(3),
             "cx": jnp.int32(3)}
    out, targets, _ = apply_mix(images, labels, 4, draws, 0.2)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
    np.testing.assert_allclose(np.asarray(targets), np_mixup_target(np.arange(4), 4, 1.0, 0.2), atol=1e-7)


def test_draw_rates_follow_the_probabilities():
    mix = MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.3, prob=0.8)
    draws = jax.jit(jax.vmap(lambda k: mix_draws(k, mix, 16, 16)))(jax.random.split(jax.random.key(0), 4000))
    applied, cut, lam = (np.asarray(draws[k]) for k in ("apply", "cutmix", "lam"))
    assert applied.mean() == pytest.approx(0.8, abs=0.03)
    assert cut[applied].mean() == pytest.approx(0.3, abs=0.03)
    assert np.all(lam[~applied] == 1.0)
    # Beta(1, 1) is uniform (mean 1/2, variance 1/12); Beta(0.2, 0.2) has variance 1/(4 * 1.4)
    assert lam[cut].mean() == pytest.approx(0.5, abs=0.03) and lam[cut].var() == pytest.approx(1 / 12, abs=0.01)
    mixed = applied & ~cut
    assert lam[mixed].var() == pytest.approx(1 / 5.6, abs=0.02)
    keys = jax.random.split(jax.random.key(1), 50)
    only_cut = jax.jit(jax.vmap(lambda k: mix_draws(k, MixConfig(cutmix_alpha=1.0), 8, 8)))(keys)
    assert np.all(np.asarray(only_cut["cutmix"]))


def test_mixing_is_a_function_of_the_key():
    images = jnp.asarray(np.random.default_rng(3).normal(size=(4, 8, 8, 3)), jnp.float32)
    labels = jnp.arange(4)
    mix = MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0)
    a = mix_batch(jax.random.key(5), images, labels, 4, mix)
    b = mix_batch(jax.random.key(5), images, labels, 4, mix)
    c = mix_batch(jax.random.key(6), images, labels, 4, mix)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[1]), np.asarray(c[1]))


def test_train_step_mixes_deterministically_given_seed_and_step():
    src = digits("train", size=16)
    batch = {"image": jnp.asarray(src.images[:16]), "label": jnp.asarray(src.labels[:16])}
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1), 10, 100)
    mix = MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0)
    step = jax.jit(make_train_step(TinyCNN(), tx, mix=mix, num_classes=10, label_smoothing=0.1))
    plain = jax.jit(make_train_step(TinyCNN(), tx, label_smoothing=0.1))
    fresh = lambda seed: create_train_state(TinyCNN(), tx, (16, 16, 3), seed=seed)  # noqa: E731
    (s1, m1), (s2, m2) = step(fresh(0), batch), step(fresh(0), batch)
    assert float(m1["loss"]) == float(m2["loss"])
    for x, y in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
        np.testing.assert_array_equal(x, y)
    # another step number draws another mix: the same weights at step 1 give another loss
    at_one = fresh(0).replace(step=jnp.int32(1))
    assert float(step(at_one, batch)[1]["loss"]) != float(m1["loss"])
    assert float(plain(fresh(0), batch)[1]["loss"]) != float(m1["loss"])


def test_bad_mix_options():
    for bad, match in ((MixConfig(mixup_alpha=-1), "mixup_alpha"), (MixConfig(prob=1.5), "mix_prob"),
                       (MixConfig(switch_prob=-0.1), "mix_switch_prob")):
        with pytest.raises(ValueError, match=match):
            check_mix(bad)
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    with pytest.raises(ValueError, match="adversarial"):
        make_train_step(TinyCNN(), tx, mix=MixConfig(mixup_alpha=0.2), num_classes=10, adversarial={"eps": 0.01})
