"""Class visualization, DeepDream, feature inversion and style transfer on real models and photos."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt.dream import deepdream, invert, visualize_classes
from jaxcnn.inputopt.optimize import evaluate
from jaxcnn.inputopt.style import preserve_colors, style_transfer
from jaxcnn.models.vgg import VGG
from tests.trained_digits import SIZE, digits_classifier

# a narrow VGG-19-shaped net (same layer names: conv1_1 ... conv5_4), small enough for the suite
NARROW_VGG19 = (8, 8, "M", 16, 16, "M", 16, 16, 16, 16, "M", 32, 32, 32, 32, "M", 32, 32, 32, 32, "M")


@pytest.fixture(scope="module")
def classifier():
    return digits_classifier()


@functools.cache
def _photo(name: str, size: int) -> np.ndarray:
    return center_crop(resize_shorter(sample_photos()[name], size), size)


@pytest.fixture(scope="module")
def vgg():
    model = VGG(cfg=NARROW_VGG19, num_classes=10)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _probs(model, variables, images):
    return np.asarray(jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, preprocess(x))[0]))(variables, images))


def test_class_visualization_raises_each_target_from_chance_to_confident(classifier):
    model, variables, *_ = classifier
    labels = np.arange(10)
    res = visualize_classes(model, variables, labels, size=SIZE, steps=60, tv_weight=0.05)
    before = _probs(model, variables, res.start)[labels, labels]
    after = _probs(model, variables, res.images)[labels, labels]
    low = before < 0.2
    assert low.sum() >= 8                      # from noise most classes start near zero
    assert np.all(after > 0.9), after          # every class is rendered confidently, all in one call
    assert res.images.shape == (10, SIZE, SIZE, 3)


def test_deepdream_amplifies_the_layer_on_a_photo(classifier):
    model, variables, *_ = classifier
    photo = jnp.asarray(_photo("chelsea", SIZE + 8))[None]
    dreamed = deepdream(model, variables, photo, "block1", octaves=2, steps_per_octave=8, jitter=2)
    energy = lambda x: evaluate(model, variables, O.layer_l2("block1"), x)
    assert dreamed.shape == photo.shape
    assert float(dreamed.min()) >= 0 and float(dreamed.max()) <= 1
    assert energy(dreamed)[0] > 2 * energy(photo)[0]


@pytest.mark.parametrize("layer", ["block0", "block1"])
def test_feature_inversion_lowers_the_feature_distance(classifier, layer):
    model, variables, images, *_ = classifier
    _, before, after = invert(model, variables, images[:4], layer, steps=150)
    assert np.all(after < before / 20), (before, after)


# L-BFGS (Gatys et al.'s optimiser) compiles its line search around the VGG, slowly, so it runs with
# -m slow; the loop's L-BFGS is tested by default in test_inputopt.py, and style transfer with Adam here.
@pytest.mark.parametrize("optimizer", [pytest.param("lbfgs", marks=pytest.mark.slow), "adam"])
def test_style_transfer_lowers_content_and_style_losses(vgg, optimizer):
    model, variables = vgg
    content = _photo("astronaut", 48)
    styles = [_photo("coffee", 40), _photo("chelsea", 56)]    # style images of other sizes, blended
    out = style_transfer(model, variables, content, styles, style_blend=[2, 1], init="noise", steps=40,
                         optimizer=optimizer, learning_rate=0.02)
    (c0, c1), (s0, s1) = out.content_loss, out.style_loss
    assert c1 < c0 / 10 and s1 < s0, (out.content_loss, out.style_loss)
    assert out.images.shape == (1, 48, 48, 3)


def test_style_blend_equals_weighted_gram_targets(vgg):
    from jaxcnn.inputopt.style import style_objectives
    model, variables = vgg
    content, a, b = _photo("astronaut", 32), _photo("coffee", 32), _photo("chelsea", 40)
    _, blended = style_objectives(model, variables, content, [a, b], style_blend=[3, 1], style_layers=("conv2_1",))
    _, only_a = style_objectives(model, variables, content, [a], style_layers=("conv2_1",))
    _, only_b = style_objectives(model, variables, content, [b], style_layers=("conv2_1",))
    np.testing.assert_allclose(blended.terms[0].params, 0.75 * only_a.terms[0].params + 0.25 * only_b.terms[0].params,
                               rtol=1e-5)


def test_colour_preservation_keeps_content_chrominance():
    content = jnp.asarray(_photo("coffee", 24))
    result = jnp.asarray(_photo("chelsea", 24))
    mixed = preserve_colors(result, content)
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    ok = np.all((np.asarray(mixed) > 1e-4) & (np.asarray(mixed) < 1 - 1e-4), axis=-1)   # unclipped pixels
    np.testing.assert_allclose((np.asarray(mixed) @ yiq.T)[ok][:, 0], (np.asarray(result) @ yiq.T)[ok][:, 0],
                               atol=1e-5)
    np.testing.assert_allclose((np.asarray(mixed) @ yiq.T)[ok][:, 1:], (np.asarray(content) @ yiq.T)[ok][:, 1:],
                               atol=1e-5)


def test_style_bad_input(vgg):
    model, variables = vgg
    content = _photo("astronaut", 32)
    with pytest.raises(ValueError, match="no layer 'conv6_1'; valid: conv1_1"):
        style_transfer(model, variables, content, [content], style_layers=("conv6_1",), steps=1)
    with pytest.raises(ValueError, match="needs 2 non-negative weights"):
        style_transfer(model, variables, content, [content, content], style_blend=[1, -1], steps=1)
    with pytest.raises(ValueError, match="at least one style image"):
        style_transfer(model, variables, content, [], steps=1)


def test_normalised_step_is_scale_invariant():
    from jaxcnn.inputopt.optimize import scale_by_mean_abs
    tx = scale_by_mean_abs()
    g = jnp.asarray(np.random.default_rng(7).normal(size=(2, 4, 4, 3)), jnp.float32)
    step = lambda g: np.asarray(tx.update(g, tx.init(g))[0])
    want = np.asarray(g) / np.abs(np.asarray(g)).reshape(2, -1).mean(1)[:, None, None, None]
    for scale in (1.0, 1e-16, 1e-30, 1e12):    # a random network's gradients can be this small
        np.testing.assert_allclose(step(g * scale), want, rtol=1e-5)
    assert np.all(step(jnp.zeros_like(g)) == 0)    # a zero gradient: a zero step, no NaN


def test_deepdream_moves_an_image_whose_objective_gradient_is_tiny(classifier):
    model, variables, *_ = classifier
    from jaxcnn.inputopt.dream import dream_change
    photo = jnp.asarray(_photo("coffee", SIZE))[None]
    # every conv kernel 10^4 times smaller: the gradient is about 1e-11 (an absolute epsilon of 1e-8 froze it)
    tiny = jax.tree.map(lambda a: a * 1e-4 if a.ndim == 4 else a, variables)
    dreamed = deepdream(model, tiny, photo, "block1", octaves=1, steps_per_octave=4, jitter=1, learning_rate=0.01)
    change = dream_change(model, tiny, photo, dreamed, "block1")
    assert change.moved and change.max_change[0] > 10, change     # with the absolute epsilon: about 2/255
    # the objective's change is below float32's resolution here; the step went up its gradient
    grad = jax.jit(jax.grad(lambda x: jnp.sum(O.layer_l2("block1")(
        {"features": model.apply(tiny, preprocess(x))[1], "logits": None, "image": x}))))(photo)
    assert float(jnp.vdot(dreamed - photo, grad)) > 0


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    from tests.trained_digits import write_weights_and_photo
    return write_weights_and_photo(tmp_path_factory.mktemp("w"))


def test_dream_and_style_commands_report_the_change_and_warn_when_nothing_moved(weight_file, tmp_path, capsys):
    from jaxcnn.cli import main
    path, photo = weight_file
    common = ["--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--out", str(tmp_path)]
    dream = ["dream", photo, *common, "--layer", "block1", "--octaves", "1", "--steps", "2", "--jitter", "1"]
    assert main(dream) == 0
    out, err = capsys.readouterr()
    line = next(ln for ln in out.splitlines() if ln.startswith("seven: objective"))
    assert float(line.split("largest pixel change ")[1].split("/")[0]) >= 1 and "did not change" not in err
    assert main([*dream, "--lr", "0"]) == 0
    out, err = capsys.readouterr()
    assert "largest pixel change 0.0/255" in out
    assert "warning: the images did not change" in err
    style = ["style", photo, photo, *common, "--content-layer", "block1", "--style-layers", "block0",
             "--optimizer", "adam", "--steps", "2"]
    assert main([*style, "--lr", "0"]) == 0
    out, err = capsys.readouterr()
    assert "content loss" in out and "largest pixel change from the start 0.0/255" in out
    assert "warning: the image did not change" in err
