"""torch-semantics layers against brute-force loops written from torch's documentation."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers


def _torch_pool_out(size, k, s, p, ceil_mode):
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _brute_pool(x, k, s, p, ceil_mode, op, count_include_pad=True):
    n, h, w, c = x.shape
    oh, ow = _torch_pool_out(h, k, s, p, ceil_mode), _torch_pool_out(w, k, s, p, ceil_mode)
    out = np.zeros((n, oh, ow, c), np.float64)
    for i, j in itertools.product(range(oh), range(ow)):
        h0, w0 = i * s - p, j * s - p
        h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)  # torch clips windows at the padded border
        window = x[:, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
        if op == "max":
            out[:, i, j] = window.max(axis=(1, 2))
        else:
            div = (h1 - h0) * (w1 - w0) if count_include_pad else window.shape[1] * window.shape[2]
            out[:, i, j] = window.sum(axis=(1, 2)) / div
    return out


@pytest.mark.parametrize("size,k,s,p,ceil_mode", [
    (13, 3, 2, 0, True), (14, 3, 2, 0, True), (13, 3, 2, 1, False), (12, 2, 2, 0, True), (11, 3, 1, 1, True),
    (7, 3, 2, 1, True), (55, 3, 2, 0, False), (6, 3, 3, 1, True)])
def test_max_pool_matches_torch_rule(size, k, s, p, ceil_mode):
    x = np.random.default_rng(size + k).standard_normal((2, size, size + 1, 3)).astype(np.float32)
    got = np.asarray(layers.max_pool(jnp.asarray(x), k, s, p, ceil_mode=ceil_mode))
    want = _brute_pool(x, k, s, p, ceil_mode, "max")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("size,k,s,p", [(8, 3, 1, 1), (17, 5, 3, 0), (9, 2, 2, 0), (10, 3, 2, 1)])
def test_avg_pool_matches_torch_rule(size, k, s, p, count_include_pad):
    x = np.random.default_rng(size).standard_normal((1, size, size, 2)).astype(np.float32)
    got = layers.avg_pool(jnp.asarray(x), k, s, p, count_include_pad=count_include_pad)
    want = _brute_pool(x, k, s, p, False, "avg", count_include_pad)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hw,out", [((13, 9), (6, 6)), ((7, 7), (7, 7)), ((1, 2), (6, 6)), ((5, 3), (7, 7)),
                                    ((10, 10), (1, 1)), ((9, 14), (4, 4))])
def test_adaptive_avg_pool_windows(hw, out):
    x = np.random.default_rng(0).standard_normal((2, *hw, 3))
    want = np.zeros((2, *out, 3))
    for i, j in itertools.product(range(out[0]), range(out[1])):
        h0, h1 = math.floor(i * hw[0] / out[0]), math.ceil((i + 1) * hw[0] / out[0])
        w0, w1 = math.floor(j * hw[1] / out[1]), math.ceil((j + 1) * hw[1] / out[1])
        want[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    got = layers.adaptive_avg_pool(jnp.asarray(x, jnp.float32), out)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_resize_bilinear_is_torch_align_corners_false():
    x = np.random.default_rng(1).standard_normal((1, 5, 4, 2))
    oh, ow = 13, 11

    def src(o, n_in, n_out):  # torch: (dst + 0.5) * scale - 0.5, clamped at 0
        f = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(f)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), f - i0

    want = np.zeros((1, oh, ow, 2))
    for i, j in itertools.product(range(oh), range(ow)):
        a0, a1, fa = src(i, 5, oh)
        b0, b1, fb = src(j, 4, ow)
        want[0, i, j] = ((1 - fa) * ((1 - fb) * x[0, a0, b0] + fb * x[0, a0, b1])
                         + fa * ((1 - fb) * x[0, a1, b0] + fb * x[0, a1, b1]))
    got = layers.resize_bilinear(jnp.asarray(x, jnp.float32), oh, ow)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_flatten_chw_is_torch_order():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # NHWC
    got = np.asarray(layers.flatten_chw(jnp.asarray(x)))
    np.testing.assert_array_equal(got, x.transpose(0, 3, 1, 2).reshape(2, -1))


@pytest.mark.parametrize("x,message", [
    (np.zeros((8, 8, 3), np.float32), "rank 4"),
    (np.zeros((1, 3, 8, 8), np.float32), "looks like NCHW"),
    (np.zeros((1, 8, 8, 1), np.float32), "3 colour channels"),
    (np.zeros((1, 8, 8, 3), np.uint8), "floating-point"),
    (np.zeros((1, 4, 8, 3), np.float32), "at least 5x5"),
    ([1, 2, 3], "NHWC image array"),
])
def test_check_images_messages(x, message):
    with pytest.raises(ValueError, match=message) as e:
        layers.check_images(x, model="M", min_size=5)
    assert "\n" not in str(e.value)


def test_max_pool_gradient_routes_to_the_maxima():
    import jax
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 7, 7, 2)), jnp.float32)
    g = jax.grad(lambda x: layers.max_pool(x, 2, 2, ceil_mode=True).sum())(x)
    # non-overlapping windows: one 1 per window (4x4 windows with ceil mode on 7x7), zeros elsewhere
    assert float(g.sum()) == 2 * 16 and set(np.unique(np.asarray(g))) <= {0.0, 1.0}


def test_local_response_norm_gradient_is_finite():
    import jax
    x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 3, 3, 8)), jnp.float32)
    g = jax.grad(lambda x: layers.local_response_norm(x, groups=2).sum())(x)
    assert bool(jnp.all(jnp.isfinite(g)))
