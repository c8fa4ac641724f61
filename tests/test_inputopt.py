"""The input-optimisation engine: objectives, parametrizations, transforms, the compiled loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.inputopt import InputOptimizer, objectives as O
from jaxcnn.inputopt.optimize import evaluate
from jaxcnn.inputopt.param import Fourier, Pixels
from jaxcnn.inputopt.transforms import Jitter, RandomRotate, RandomScale, standard_transforms
from tests.trained_digits import SIZE, digits_classifier


@pytest.fixture(scope="module")
def classifier():
    return digits_classifier()


# ------------------------------------------------------------------ objectives vs float64 references
def _toy_ctx(x):
    """A differentiable stand-in for a network: features are smooth functions of the image."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), x.dtype)
    f = jnp.tanh(x @ w)                                      # (B, H, W, 5)
    logits = jnp.mean(f, axis=(1, 2)) @ jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)), x.dtype)
    return {"features": {"f": f, "g": f[:, ::2, ::2] ** 2}, "logits": logits, "image": x}


def _all_objectives(rng):
    b = 2
    target = rng.normal(size=(b, 6, 6, 5)).astype(np.float32)
    return {
        "class_logit": O.class_logit([1, 3]),
        "class_logprob": O.class_logprob(2),
        "channel": O.channel("f", [0, 4]),
        "neuron": O.neuron("f", 1, y=2, x=3),
        "layer_l2": O.layer_l2("g"),
        "match": O.match_activations("f", target),
        "content": O.content("f", target),
        "gram_match": O.gram_match("f", rng.normal(size=(1, 5, 5)).astype(np.float32)),
        "total_variation": O.total_variation(),
        "total_variation_b1": O.total_variation(beta=1.0),
        "l2": O.l2(),
        "blur": O.blur(),
        "sum": 2.0 * O.class_logit(0) - 0.5 * O.layer_l2("f") + O.total_variation() * 3,
        # lucid's algebra in one case (each case differentiates its own program)
        "lucid_algebra": O.channel_interpolate("f", 1, "g", 3) - 0.5 * O.diversity("f") + O.alignment("g")
        + O.direction("f", rng.normal(size=5), cossim_pow=2)
        * O.direction_neuron("f", rng.normal(size=(b, 5)), y=1, x=4) / (O.layer_l2("g") + 1.0),
    }


@pytest.mark.parametrize("name", list(_all_objectives(np.random.default_rng(0))))
def test_objective_gradient_matches_finite_differences_in_float64(name):
    rng = np.random.default_rng(0)
    obj = _all_objectives(rng)[name]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.uniform(0.2, 0.8, size=(2, 6, 6, 3)), jnp.float64)
        f = jax.jit(lambda x: jnp.sum(obj(_toy_ctx(x))))      # one compile each, not one per operation
        grad = jax.jit(jax.grad(f))(x)
        assert grad.dtype == jnp.float64
        for _ in range(3):
            d = jnp.asarray(rng.normal(size=x.shape), jnp.float64)
            eps = 1e-6
            fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
            np.testing.assert_allclose(float(jnp.vdot(grad, d)), float(fd), rtol=1e-6, atol=1e-9)


def test_gram_style_and_content_losses_match_numpy():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    target_f = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    a = rng.normal(size=(1, 3, 3)).astype(np.float32)
    ctx = {"features": {"l": jnp.asarray(f)}, "logits": None, "image": None}
    g = np.zeros((2, 3, 3))
    for b in range(2):
        for i in range(3):
            for j in range(3):
                g[b, i, j] = sum(f[b, y, x, i] * f[b, y, x, j] for y in range(4) for x in range(5)) / 20.0
    np.testing.assert_allclose(O.gram(jnp.asarray(f)), g, rtol=1e-5)
    style = np.array([np.sum((g[b] - a[0]) ** 2) / (4 * 3 * 3) for b in range(2)])
    np.testing.assert_allclose(-O.gram_match("l", a)(ctx), style, rtol=1e-5)
    content = np.array([0.5 * np.sum((f[b] - target_f[0]) ** 2) for b in range(2)])
    np.testing.assert_allclose(-O.content("l", target_f)(ctx), content, rtol=1e-5)


def test_objective_algebra_combines_terms_and_weights():
    ctx = _toy_ctx(jnp.asarray(np.random.default_rng(4).uniform(size=(2, 6, 6, 3)), jnp.float32))
    a, b = O.class_logit(1), O.layer_l2("f")
    np.testing.assert_allclose((a + 2 * b - a * 0.5)(ctx), 0.5 * a(ctx) + 2 * b(ctx), rtol=1e-6)
    np.testing.assert_allclose((-b)(ctx), -b(ctx))
    assert (a + b).layers == ("f",)
    leaves = jax.tree.leaves(a + 2 * b)
    assert any(np.ndim(leaf) == 0 and float(leaf) == 2.0 for leaf in leaves)   # weights are pytree leaves


# ------------------------------------------------------------------ parametrizations and transforms
def test_parametrizations_stay_in_range_and_fourier_inverts_an_image():
    rng = np.random.default_rng(5)
    image = jnp.asarray(rng.uniform(0.05, 0.95, size=(2, 8, 10, 3)), jnp.float32)
    f = Fourier()
    np.testing.assert_allclose(f.to_image(f.init(None, image.shape, image)), image, atol=1e-4)
    wild = 10.0 * jax.random.normal(jax.random.key(0), f.init(jax.random.key(1), image.shape).shape)
    out = f.to_image(wild)
    assert out.shape == image.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    p = Pixels()
    assert float(p.project(image * 3 - 1).min()) == 0.0 and float(p.project(image * 3 - 1).max()) == 1.0
    with pytest.raises(ValueError, match="even image width"):
        f.init(jax.random.key(0), (1, 8, 9, 3))


def test_transforms_are_exact_where_the_answer_is_known():
    x = jnp.asarray(np.random.default_rng(6).uniform(size=(3, 9, 9, 2)), jnp.float32)
    key = jax.random.key(0)
    np.testing.assert_allclose(RandomScale((1.0,))(x, key), x, atol=1e-6)
    np.testing.assert_allclose(RandomRotate((0.0,))(x, key), x, atol=1e-6)
    np.testing.assert_allclose(RandomRotate((90.0,))(x, key), np.rot90(x, k=1, axes=(1, 2)), atol=1e-5)
    shifted = Jitter(2)(x, key)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for b in range(3):   # every output is some 9x9 window of the reflected padding
        assert any(np.allclose(shifted[b], padded[b, i:i + 9, j:j + 9]) for i in range(5) for j in range(5))
    t = standard_transforms(16)
    assert len(t) == 4


# ------------------------------------------------------------------ the compiled loop on a trained model
def test_loop_compiles_once_per_shape_and_structure(classifier):
    model, variables, *_ = classifier
    opt = InputOptimizer(model, variables, steps=5, learning_rate=0.05)
    opt.run(O.class_logit(jnp.arange(8)) - 0.1 * O.total_variation(), (8, SIZE, SIZE), key=0)
    first = opt.trace_count      # 1 (one scan), or 2 on the CPU: a step from the initial and from a later state
    assert first in (1, 2)
    opt.run(O.class_logit(jnp.arange(8)[::-1]) - 0.3 * O.total_variation(), (8, SIZE, SIZE), key=1)
    assert opt.trace_count == first          # new labels and weights: the same programs
    opt.run(O.class_logit(jnp.arange(8)) - 0.1 * O.total_variation(), (8, SIZE + 4, SIZE + 4), key=0)
    assert opt.trace_count == 2 * first      # a new shape compiles once more


def test_batch_is_sharded_over_devices_and_matches_one_device(classifier):
    model, variables, images, *_ = classifier
    obj = O.class_logit(jnp.arange(8)) - 0.05 * O.total_variation()
    opt = InputOptimizer(model, variables, steps=6, transforms=standard_transforms(SIZE))
    sharded = opt.run(obj, images[:8])
    assert opt._chunk._cache_size() == 1    # the state keeps its shardings from step to step: one compile
    single = InputOptimizer(model, variables, steps=6, transforms=standard_transforms(SIZE), shard=False).run(
        obj, images[:8])
    assert len(sharded.images.sharding.device_set) == len(jax.devices()) == 8
    assert len(single.images.sharding.device_set) == 1
    np.testing.assert_allclose(sharded.images, single.images, atol=2e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "lbfgs", "normalized_sgd"])
def test_every_optimizer_ascends_and_keeps_pixels_valid(classifier, optimizer):
    model, variables, images, *_ = classifier
    obj = O.class_logprob(jnp.arange(4))
    res = InputOptimizer(model, variables, steps=8, optimizer=optimizer, learning_rate=0.02).run(obj, images[:4])
    before, after = evaluate(model, variables, obj, images[:4]), evaluate(model, variables, obj, res.images)
    assert np.mean(after) > np.mean(before) + 0.5
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    assert res.history.shape == (8, 4)


def test_bad_input_gives_one_line_errors(classifier):
    model, variables, images, *_ = classifier
    opt = InputOptimizer(model, variables, steps=2)
    with pytest.raises(ValueError, match=r"no layer 'conv9'; valid: block0, block1, pre_logits"):
        opt.run(O.layer_l2("conv9"), (1, SIZE, SIZE))
    with pytest.raises(ValueError, match="class label out of range"):
        opt.run(O.class_logit(10), (1, SIZE, SIZE))
    bad = images[:1].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        opt.run(O.class_logit(1), bad)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        opt.run(O.class_logit(1), images[:1] * 255)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid: adam, sgd, lbfgs"):
        InputOptimizer(model, variables, optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown parametrization 'cppn'; valid: pixels, fourier"):
        InputOptimizer(model, variables, param="cppn")


def test_argument_checks_trace_the_model_once_per_shape(classifier, monkeypatch):
    # InputOptimizer.run and the attacks check layers and labels against the model's output shapes;
    # those are traced once per (module, variable shapes, image shape), not on every call
    from jaxcnn.inputopt import problem
    model, variables, *_ = classifier
    traced = []
    original = problem._trace_shapes
    monkeypatch.setattr(problem, "_trace_shapes", lambda *a: traced.append(a[2]) or original(*a))
    problem._feature_shapes.cache_clear()
    first = problem.feature_shapes(model, variables, (3, SIZE, SIZE, 3))
    copy = jax.tree_util.tree_map(lambda a: np.asarray(a) + 1, variables)   # other values, same shapes
    again = problem.feature_shapes(model, copy, (3, SIZE, SIZE, 3))
    other = problem.feature_shapes(model, variables, (1, 2 * SIZE, 2 * SIZE, 3))
    monkeypatch.undo()
    assert traced == [(3, SIZE, SIZE, 3), (1, 2 * SIZE, 2 * SIZE, 3)]
    assert again is first and first[0].shape == (3, 10)
    assert other[1]["block1"].shape[1] == 2 * first[1]["block1"].shape[1]
    fresh = original(model, variables, (3, SIZE, SIZE, 3))
    assert jax.tree_util.tree_map(lambda a: a.shape, fresh) == jax.tree_util.tree_map(lambda a: a.shape, first)
