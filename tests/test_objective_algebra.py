"""lucid's objective algebra: products, quotients, numbers, directions, interpolation, diversity, alignment.

Each value is checked against a NumPy float64 transcription of lucid's definition
(``lucid/optvis/objectives.py``) written out with loops over images, positions and pairs, on random
activations; the batch-coupled objectives return a (B,) vector whose sum is lucid's scalar.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt import problem

B, H, W, C = 6, 5, 4, 7


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(B, H, W, C))
    g = np.abs(rng.normal(size=(B, 3, 3, C + 2)))
    logits = rng.normal(size=(B, 10))
    image = rng.uniform(size=(B, 8, 8, 3))
    ctx = {"features": {"f": jnp.asarray(f, jnp.float32), "g": jnp.asarray(g, jnp.float32)},
           "logits": jnp.asarray(logits, jnp.float32), "image": jnp.asarray(image, jnp.float32)}
    return f, g, logits, ctx


def _close(got, want, rtol=2e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@jax.jit
def _value(objective, ctx):
    """``objective(ctx)``, compiled once per objective structure (an objective is a pytree)."""
    return objective(ctx)


def test_products_quotients_and_numbers(acts):
    f, g, logits, ctx = acts
    a, b = O.channel("f", 2), O.class_logit(3)
    va, vb = f[..., 2].mean(axis=(1, 2)), logits[:, 3]
    _close((a * b)(ctx), va * vb)
    _close(_value(a / b, ctx), va / vb, rtol=1e-4)
    _close(_value(2.0 / b, ctx), 2.0 / vb, rtol=1e-4)
    _close(_value(a + 1.5, ctx), va + 1.5)
    _close(_value(1.5 + a, ctx), va + 1.5)
    _close(_value(1.0 - a, ctx), 1.0 - va)
    _close(_value(a - 1.0, ctx), va - 1.0)
    _close(_value(a / 4, ctx), va / 4)
    _close(_value(3 * (a * b) - 0.5 * (a / b) + b * 2, ctx), 3 * va * vb - 0.5 * va / vb + 2 * vb, rtol=1e-4)
    nested = (a * b) * (O.channel("g", 0) + 2.0)
    _close(_value(nested, ctx), va * vb * (g[..., 0].mean(axis=(1, 2)) + 2.0))
    assert nested.layers == ("f", "g")
    # a product is a pytree whose leaves are its factors' parameters and weights: same structure, new values
    leaves, tree = jax.tree.flatten(3.0 * (a * b))
    weight = lambda v: isinstance(v, float) and v == 3.0     # the product's weight (the label 3 is an array)
    assert sum(map(weight, leaves)) == 1
    again = jax.tree.unflatten(tree, [v * 2 if weight(v) else v for v in leaves])
    _close(_value(again, ctx), 6 * va * vb)


def _dot_cossim(x, v, p):
    """lucid's ``_dot_cossim`` for one pair of vectors."""
    dot = float(np.dot(x, v))
    if p == 0:
        return dot
    cos = dot / (1e-4 + np.linalg.norm(x)) / (1e-4 + np.linalg.norm(v))
    return dot * max(0.1, cos) ** p


@pytest.mark.parametrize("cossim_pow", [0, 2])
def test_direction_and_direction_neuron(acts, cossim_pow):
    f, _, _, ctx = acts
    rng = np.random.default_rng(1)
    vec, per_image = rng.normal(size=C), rng.normal(size=(B, C))
    want = [np.mean([_dot_cossim(f[i, y, x], vec, cossim_pow) for y in range(H) for x in range(W)])
            for i in range(B)]
    _close(_value(O.direction("f", vec, cossim_pow=cossim_pow), ctx), want)
    want = [np.mean([_dot_cossim(f[i, y, x], per_image[i], cossim_pow) for y in range(H) for x in range(W)])
            for i in range(B)]
    _close(_value(O.direction("f", per_image, cossim_pow=cossim_pow), ctx), want)
    centre = [_dot_cossim(f[i, H // 2, W // 2], vec, cossim_pow) for i in range(B)]
    _close(_value(O.direction_neuron("f", vec, cossim_pow=cossim_pow), ctx), centre)
    at = [_dot_cossim(f[i, 1, 3], per_image[i], cossim_pow) for i in range(B)]
    _close(_value(O.direction_neuron("f", per_image, y=1, x=3, cossim_pow=cossim_pow), ctx), at)


def test_channel_interpolate(acts):
    f, g, _, ctx = acts
    total, per = 0.0, []
    for n in range(B):                       # lucid's loop: image 0 all the first unit, image B-1 the second
        w = n / (B - 1)
        per.append((1 - w) * f[n, ..., 4].mean() + w * g[n, ..., 1].mean())
        total += per[-1]
    got = _value(O.channel_interpolate("f", 4, "g", 1), ctx)
    _close(got, per)
    assert float(jnp.sum(got)) == pytest.approx(total, rel=1e-5)
    one = {**ctx, "features": {k: v[:1] for k, v in ctx["features"].items()}, "image": ctx["image"][:1]}
    _close(_value(O.channel_interpolate("f", 4, "g", 1), one), [f[0, ..., 4].mean()])


def test_diversity_is_minus_lucids_gram_cosine_sum(acts):
    f, _, _, ctx = acts
    grams = []
    for i in range(B):
        flat = f[i].reshape(-1, C)
        gm = np.array([[np.sum(flat[:, p] * flat[:, q]) for q in range(C)] for p in range(C)])
        grams.append(gm / np.sqrt(max(np.sum(gm ** 2), 1e-10)))
    sims = [sum(np.sum(grams[i] * grams[j]) for j in range(B) if j != i) for i in range(B)]
    lucid = sum(sims) / B
    got = _value(O.diversity("f"), ctx)
    _close(got, -np.array(sims) / B, rtol=1e-4)
    assert float(jnp.sum(got)) == pytest.approx(-lucid, rel=1e-5)


def test_alignment(acts, decay=3.0):
    _, g, _, ctx = acts
    lucid, per = 0.0, np.zeros(B)
    for d in (1, 2, 3, 4):
        for i in range(B - d):
            term = np.mean((g[i] - g[i + d]) ** 2) / decay ** d
            lucid -= term
            per[i] -= term / 2
            per[i + d] -= term / 2
    got = _value(O.alignment("g", decay_ratio=decay), ctx)
    _close(got, per)
    assert float(jnp.sum(got)) == pytest.approx(lucid, rel=1e-5)
    three = {**ctx, "features": {"g": ctx["features"]["g"][:3]}, "image": ctx["image"][:3]}
    want = -sum(np.mean((g[i] - g[i + d]) ** 2) / decay ** d for d in (1, 2) for i in range(3 - d))
    assert float(jnp.sum(_value(O.alignment("g", decay), three))) == pytest.approx(want, rel=1e-5)


def test_new_objectives_are_checked_against_the_model(acts):
    *_, ctx = acts
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in ctx["features"].items()}
    check = lambda obj: problem.check_objective(obj, (B, 10), shapes)
    check(O.direction("f", np.ones(C)) * O.channel_interpolate("f", 0, "g", C + 1))
    with pytest.raises(ValueError, match=r"direction vector of shape \(3,\) does not fit f, which has 7 channels"):
        check(O.class_logit(0) / O.direction("f", np.ones(3)))
    with pytest.raises(ValueError, match="channel 9..9 out of range for g, which has 9 channels"):
        check(O.channel_interpolate("f", 0, "g", 9))
    with pytest.raises(ValueError, match="direction_neuron y=5 out of range for f, whose feature map is 5x4"):
        check(O.direction_neuron("f", np.ones(C), y=5))
    with pytest.raises(ValueError, match="the model has no layer 'h'"):
        check(2.0 * (O.diversity("h") * O.class_logit(1)))
    with pytest.raises(ValueError, match="class label out of range"):
        check(1.0 / O.class_logit(10))
