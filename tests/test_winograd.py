"""The Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions compute the convolution: forward and both gradients.

The reference is ``lax.conv_general_dilated`` in float64 on the same float32 operands; errors are
relative to the largest output. The bound is the algorithm's, not the direct convolution's: the
transforms scale by up to 8 and 1/24, so float32 rounding leaves about 1e-5 (the direct oneDNN
convolution: 2e-6, ``test_onednn.py``). The cases cover both schedules (few tiles: the kernel
transformed per block of output channels; many: per block of tiles), channel counts off the
64-lane blocks, odd sizes with partial tiles, and every padding 0..r-1 on each side.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import lowering, onednn, winograd

pytestmark = pytest.mark.skipif(not onednn.available(), reason=f"oneDNN unavailable: {onednn.why_unavailable()}")

TOL = 3e-5          # float32, relative to the largest output (measured: 3e-6 to 1e-5)

CASES = [  # (x shape NHWC, out channels, padding, kernel size)
    ((2, 9, 11, 32), 48, ((1, 1), (1, 1)), 3),         # few tiles (2 x 3 x 3)
    ((1, 13, 13, 40), 32, ((0, 2), (2, 0)), 3),        # one-sided padding
    ((3, 8, 8, 32), 32, ((0, 0), (0, 0)), 3),          # "valid"
    ((1, 17, 6, 33), 35, ((2, 2), (1, 0)), 3),         # padding 2, odd channel counts
    ((4, 30, 30, 32), 40, ((1, 1), (1, 1)), 3),        # many tiles (4 x 8 x 8 = 256)
    ((2, 33, 31, 70), 130, ((2, 0), (0, 1)), 3),       # many tiles, channels past one 64-lane block
    ((2, 9, 11, 32), 48, ((2, 2), (2, 2)), 5),         # 5x5: few tiles (2 x 5 x 6), AlexNet's padding
    ((1, 14, 9, 33), 35, ((4, 0), (3, 1)), 5),         # 5x5: every padding up to 4, odd channels
    ((2, 27, 27, 64), 70, ((2, 2), (2, 2)), 5),        # 5x5: many tiles (2 x 14 x 14), AlexNet's conv2 map
]


def _conv64(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision="highest")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_gradients_match_float64(case):
    shape, o, padding, r = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(r, r, shape[3], o)) / np.sqrt(r * r * shape[3]), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: winograd.conv(x, w, padding), x, w)
    ct = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    dx, dw = vjp(ct)
    with jax.enable_x64():
        f64 = lambda a: jnp.asarray(np.asarray(a), jnp.float64)  # noqa: E731
        y_ref, vjp_ref = jax.vjp(lambda x, w: _conv64(x, w, padding), f64(x), f64(w))
        dx_ref, dw_ref = vjp_ref(f64(ct))
    assert y.shape == y_ref.shape
    assert _rel(y, y_ref) < TOL
    assert _rel(dx, dx_ref) < TOL
    assert _rel(dw, dw_ref) < 2e-6     # the weight gradient is oneDNN's direct one


@pytest.mark.parametrize("r", [3, 5])
def test_both_schedules_agree_with_each_other(monkeypatch, r):
    """The same convolution through the per-tile-block and the per-channel-block schedules."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 18, 18, 48)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(r, r, 48, 80)) / 20, jnp.float32)
    pads = ((r // 2, r // 2),) * 2                        # 2 x 5 x 5 = 50 tiles (3x3), 2 x 9 x 9 (5x5)
    few = jax.jit(lambda x, w: winograd.conv(x, w, pads))(x, w)
    monkeypatch.setattr(winograd, "FEW_TILES", 0)
    many = jax.jit(lambda x, w: winograd.conv(x, w, pads))(x, w)
    assert _rel(many, few) < 1e-6


def test_bad_operands_get_one_line_errors():
    x, w = jnp.zeros((1, 8, 8, 32), jnp.float32), jnp.zeros((3, 3, 32, 32), jnp.float32)
    with pytest.raises(ValueError, match="3x3 kernel takes padding 0..2"):
        winograd.conv(x, w, ((3, 3), (1, 1)))
    with pytest.raises(ValueError, match="5x5 kernel takes padding 0..4"):
        winograd.conv(x, jnp.zeros((5, 5, 32, 32), jnp.float32), ((5, 5), (1, 1)))
    with pytest.raises(ValueError, match=r"\(r, r, C, O\), r = 3 or 5"):
        winograd.conv(x, jnp.zeros((7, 7, 32, 32), jnp.float32), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match=r"\(r, r, C, O\), r = 3 or 5"):
        winograd.conv(x, jnp.zeros((3, 5, 32, 32), jnp.float32), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="float32"):
        winograd.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), ((1, 1), (1, 1)))


def _takes(x_shape, w_shape, strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1,
           dtype=jnp.float32):
    return winograd.eligible(jnp.zeros(x_shape, dtype), jnp.zeros(w_shape, dtype), strides, padding,
                             dilation, groups)


def test_eligible_only_where_it_is_faster_and_defined():
    vgg = ((8, 56, 56, 256), (3, 3, 256, 256))
    assert _takes(*vgg)
    assert not _takes(*vgg, strides=(2, 2))
    assert not _takes(*vgg, dilation=(2, 2))
    assert not _takes(*vgg, dtype=jnp.bfloat16)
    assert not _takes(*vgg, padding=((3, 3), (1, 1)))
    assert not _takes((8, 56, 56, 256), (3, 3, 128, 256), groups=2)
    assert not _takes(*vgg, padding=((1, 1), (0, 3)))
    assert not _takes((8, 56, 56, 256), (7, 7, 256, 256), padding=((3, 3), (3, 3)))
    assert not _takes((8, 56, 56, 256), (3, 5, 256, 256), padding=((1, 1), (2, 2)))
    alexnet2 = ((32, 27, 27, 64), (5, 5, 64, 192))                         # 5x5: 32 x 14 x 14 tiles of 2x2
    assert _takes(*alexnet2, padding=((2, 2), (2, 2)))
    assert _takes(*alexnet2, padding=((4, 0), (0, 4)))
    assert not _takes(*alexnet2, padding=((5, 5), (2, 2)))
    assert not _takes((1, 27, 27, 64), (5, 5, 64, 192), padding=((2, 2), (2, 2)))   # 196 tiles: a tie
    assert not _takes((16, 35, 35, 48), (5, 5, 48, 64), padding=((2, 2), (2, 2)))   # 48 channels: direct wins
    assert not _takes((8, 56, 56, 16), (3, 3, 16, 64))                     # thin: direct wins
    assert not _takes((1, 8, 8, 512), (3, 3, 512, 512))                    # 4 tiles: direct wins
    assert not _takes((16, 7, 7, 512), (3, 3, 512, 512))                   # 64 tiles of 512 channels: a tie
    assert _takes((8, 14, 14, 512), (3, 3, 512, 512))                      # 128 tiles: Winograd wins
    assert _takes((16, 7, 7, 256), (3, 3, 256, 256))
    with winograd.disabled():
        assert not _takes(*vgg)
    assert _takes(*vgg)


def test_lowering_routes_eligible_convolutions_here():
    x, w = jnp.zeros((2, 28, 28, 32), jnp.float32), jnp.zeros((3, 3, 32, 32), jnp.float32)

    def lowered():   # a new function each time: jax's trace cache does not know the switch
        return jax.jit(lambda x, w: lowering.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(x, w).as_text()

    with lowering.mode("fast"):
        assert "jaxcnn_winograd_conv" in lowered()
        with winograd.disabled():
            text = lowered()
    assert "jaxcnn_winograd_conv" not in text and "jaxcnn_conv_forward" in text
