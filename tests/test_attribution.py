"""Occlusion, deconvnet / guided backprop / saliency, integrated gradients, SmoothGrad, top patches, filters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers
from jaxcnn.data.image_io import sample_photos
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt.attribution import input_gradient, integrated_gradients, occlusion, smoothgrad
from jaxcnn.inputopt.inspection import (as_kernels, first_layer, patch_factorizations, sample_patches,
                                        sparse_reconstruction_error, top_patches)
from jaxcnn.inputopt.optimize import evaluate
from jaxcnn.viz import filter_mosaic
from tests.trained_digits import SIZE, digits_classifier


@pytest.fixture(scope="module")
def clf():
    return digits_classifier()


def test_occlusion_map_equals_a_python_loop(clf):
    model, variables, x, y, _ = clf
    image, label, size, stride, fill = x[3], int(y[3]), 5, 3, 0.5
    fast = occlusion(model, variables, image, label, size=size, stride=stride, fill=fill, batch=7)
    probs = lambda im: np.asarray(jax.nn.softmax(model.apply(variables, preprocess(im[None]))[0][0]))
    ys = range(0, SIZE - size + 1, stride)
    slow = np.zeros((len(ys), len(ys)))
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(ys):
            occluded = image.copy()
            occluded[y0:y0 + size, x0:x0 + size] = fill
            slow[i, j] = probs(occluded)[label]
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    assert fast.min() < probs(image)[label]     # covering the digit lowers the true class


def test_integrated_gradients_complete(clf):
    model, variables, x, y, _ = clf
    unit = O.class_logit(y[:6])
    attr = integrated_gradients(model, variables, x[:6], unit, steps=64)
    gap = evaluate(model, variables, unit, x[:6]) - evaluate(model, variables, unit, np.zeros_like(x[:6]))
    np.testing.assert_allclose(np.asarray(attr).reshape(6, -1).sum(1), gap, rtol=0.03, atol=0.05)


class _HandNet(nn.Module):
    """conv (identity on channel 0) -> relu -> 2x2 max pool: the answer is known."""

    @nn.compact
    def __call__(self, x, train=False):
        k = np.zeros((1, 1, 3, 1), np.float32)
        k[0, 0, 0, 0] = 1.0
        h = nn.relu(jax.lax.conv_general_dilated(x, jnp.asarray(k), (1, 1), "VALID",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")) - 0.1)
        feats = {"pool": layers.max_pool(h, 2, 2)}
        return jnp.zeros((x.shape[0], 2)), feats


def test_deconvnet_routes_through_the_recorded_switches():
    net, variables = _HandNet(), {}
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 1.0, size=(1, 4, 4, 3)).astype(np.float32)
    unit = O.neuron("pool", 0, y=1, x=0)    # pools rows 2-3, cols 0-1 of the (normalized) channel 0
    for method in ("deconvnet", "guided", "saliency"):
        g = np.asarray(input_gradient(net, variables, x, unit, method))
        nz = np.argwhere(g[0] != 0)
        assert len(nz) == 1 and nz[0][2] == 0                 # one pixel of channel 0: the switch
        window = np.asarray(preprocess(x))[0, 2:4, 0:2, 0]
        sy, sx = np.unravel_index(window.argmax(), window.shape)
        assert (nz[0][0], nz[0][1]) == (2 + sy, sx)
    # a negative signal coming back: deconvnet and guided rectify it away, saliency keeps it
    neg = -1.0 * unit
    assert np.all(np.asarray(input_gradient(net, variables, x, neg, "deconvnet")) == 0)
    assert np.all(np.asarray(input_gradient(net, variables, x, neg, "guided")) == 0)
    assert np.any(np.asarray(input_gradient(net, variables, x, neg, "saliency")) != 0)


def test_gradient_methods_on_the_trained_model(clf):
    model, variables, x, y, _ = clf
    unit = O.class_logit(y[:4])
    sal = input_gradient(model, variables, x[:4], unit, "saliency")
    np.testing.assert_allclose(sal, jax.jit(jax.grad(lambda im: jnp.sum(unit({"logits": model.apply(
        variables, preprocess(im))[0], "features": {}, "image": im}))))(jnp.asarray(x[:4])), rtol=1e-5, atol=1e-7)
    guided = np.asarray(input_gradient(model, variables, x[:4], unit, "guided"))
    assert guided.shape == x[:4].shape and np.abs(guided).sum() > 0
    sg = smoothgrad(model, variables, x[:4], unit, samples=8, sigma=0.0)
    np.testing.assert_allclose(sg, sal, rtol=1e-5, atol=1e-6)          # zero noise: the plain gradient


def test_top_patches_are_the_true_arg_max(clf):
    model, variables, x, *_ = clf
    images, layer, channel = x[:60], "block0", 3
    top = top_patches(model, variables, images, layer, channel, k=5)
    forward = jax.jit(lambda im: model.apply(variables, preprocess(im[None]))[1][layer][0, ..., channel])
    acts = [np.asarray(forward(im)) for im in images]     # one image at a time
    best = np.array([a.max() for a in acts])
    np.testing.assert_array_equal(top.index, np.argsort(-best, kind="stable")[:5])
    for i, pos, v in zip(top.index, top.position, top.value):
        assert acts[i][tuple(pos)] == pytest.approx(v, rel=1e-5) == pytest.approx(acts[i].max(), rel=1e-5)
    for (y0, y1, x0, x1), patch in zip(top.box, top.patches):
        assert patch.shape == (y1 - y0, x1 - x0, 3) and 0 < y1 - y0 <= 6   # two 3x3 convs + a pool: <= 6 px


def test_patch_factorizations_and_filter_mosaics():
    photos = list(sample_photos().values())
    size, n_atoms = 6, 16
    train, held_out = sample_patches(photos, size, 3000, seed=0), sample_patches(photos, size, 500, seed=1)
    f = patch_factorizations(train, n_atoms)
    pca, dico = f["pca"], f["dictionary"]
    np.testing.assert_allclose(pca @ pca.T, np.eye(n_atoms), atol=1e-5)             # orthonormal
    np.testing.assert_allclose(np.linalg.norm(dico, axis=1), 1.0, atol=1e-5)        # unit-norm atoms
    np.testing.assert_allclose(np.linalg.norm(f["ica"], axis=1), 1.0, atol=1e-5)
    rng = np.random.default_rng(0)
    random_atoms = rng.normal(size=dico.shape)
    random_atoms /= np.linalg.norm(random_atoms, axis=1, keepdims=True)
    learned = sparse_reconstruction_error(dico, held_out, 3)
    assert learned < 0.8 * sparse_reconstruction_error(random_atoms, held_out, 3)
    mosaic = filter_mosaic(as_kernels(dico, size), cols=8)
    assert mosaic.dtype == np.uint8 and mosaic.shape[-1] == 3
    model, variables, *_ = digits_classifier()
    assert first_layer(variables).shape == (3, 3, 3, 8)
