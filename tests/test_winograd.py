"""The Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions compute the convolution: forward and both gradients.

The reference is ``lax.conv_general_dilated`` in float64 on the same float32 operands; errors are
relative to the largest output. The bound is the algorithm's, not the direct convolution's: the
transforms scale by up to 8 and 1/24, so float32 rounding leaves about 1e-5 (the direct oneDNN
convolution: 2e-6, ``test_onednn.py``). The cases cover both schedules (few tiles: the kernel
transformed per block of output channels; many: per block of tiles), channel counts off the
64-lane blocks, odd sizes with partial tiles, and every padding 0..r-1 on each side. The kernels'
transforms made beforehand (``winograd.with_transforms``, for fixed weights) compute the same, in
the model too, and are made only where they run and once per set of parameter arrays.
"""

import gc

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import cpu, layers
from jaxcnn.cpu import build, ops, winograd

pytestmark = pytest.mark.skipif(not build.available(), reason=f"oneDNN unavailable: {build.why_unavailable()}")

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


def _operands(case, salt: int = 0):
    shape, o, _, r = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32 + salt)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(r, r, shape[3], o)) / np.sqrt(r * r * shape[3]), jnp.float32)
    return x, w, rng


def _assert_matches_float64(conv, x, w, padding, rng):
    """``conv(x, w)``, its input and its weight gradient against the float64 convolution."""
    y, vjp = jax.vjp(conv, x, w)
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


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_gradients_match_float64(case):
    x, w, rng = _operands(case)
    padding = case[2]
    _assert_matches_float64(lambda x, w: winograd.conv(x, w, padding), x, w, padding, rng)


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
    # the same transforms, the products summed in another order (sgemm's blocking differs by schedule
    # and by ISA: 1.7e-6 on an AVX2-only CPU, under 1e-6 with AVX-512); both are ~1e-5 from float64
    assert _rel(many, few) < 4e-6


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
    with cpu.winograd_disabled():
        assert not _takes(*vgg)
    assert _takes(*vgg)


def test_lowering_routes_eligible_convolutions_here():
    x, w = jnp.zeros((2, 28, 28, 32), jnp.float32), jnp.zeros((3, 3, 32, 32), jnp.float32)

    def lowered():   # a new function each time: jax's trace cache does not know the switch
        return jax.jit(lambda x, w: ops.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(x, w).as_text()

    with cpu.mode("fast"):
        assert "jaxcnn_winograd_conv" in lowered()
        with cpu.winograd_disabled():
            text = lowered()
    assert "jaxcnn_winograd_conv" not in text and "jaxcnn_conv_forward" in text


# ---------------------------------------------------------------- fixed weights: transforms made beforehand
@pytest.mark.parametrize("case", CASES[::2] + CASES[5:6], ids=[f"case{i}" for i in (0, 2, 4, 6, 8, 5)])
def test_transformed_kernels_match_float64(case):
    """``conv_transformed`` by ``transform(w)`` and ``transform(w, flip=True)``: forward and both gradients."""
    shape, o, padding, _ = case
    x, w, rng = _operands(case, salt=1)
    u, ut = winograd.transform(w), winograd.transform(w, flip=True)
    assert u.shape == (36, shape[3], o) and ut.shape == (36, o, shape[3])
    _assert_matches_float64(lambda x, w: winograd.conv_transformed(x, w, u, ut, padding), x, w, padding, rng)
    with pytest.raises(ValueError, match=r"are \(36, \d+, \d+\) and"):
        winograd.conv_transformed(x, w, ut, u, padding) if shape[3] != o else winograd.conv_transformed(
            x, w, u[:1], ut, padding)


class _Net(nn.Module):
    """Wide enough (32+ channels) for the kernels to have transforms; with and without bias, 3x3 and 5x5,
    one stride-2 layer (never Winograd) and one thin layer (no transforms)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = layers.conv(32, 3, padding=1, name="thin_in")(x)                 # 3 -> 32: too thin
        x = jax.nn.relu(layers.conv(64, 3, padding=1, bias=False, name="a")(x))
        x = jax.nn.relu(layers.conv(80, 5, padding=2, name="b")(x))
        x = jax.nn.relu(layers.conv(64, 3, stride=2, padding=1, name="down")(x))
        x = jax.nn.relu(layers.conv(128, 3, padding=1, name="c")(x))   # 2 x 4 x 4 tiles: taken as wide
        return jnp.mean(x, axis=(1, 2)), {"c": x}


def test_with_transforms_computes_the_same_model_through_them():
    net = _Net()
    x = jnp.asarray(np.random.default_rng(7).uniform(size=(2, 32, 32, 3)), jnp.float32)
    variables = net.init(jax.random.key(0), x)
    with cpu.mode("fast"):
        fixed = winograd.with_transforms(variables)
        assert sorted(fixed[winograd.COLLECTION]) == ["a", "b", "c", "down"]   # every wide 3x3 / 5x5 kernel
        assert fixed[winograd.COLLECTION]["b"]["forward"].shape == (36, 64, 80)
        assert fixed[winograd.COLLECTION]["b"]["backward"].shape == (36, 80, 64)

        def score(v, x):
            return jnp.sum(net.apply(v, x)[0] ** 2)

        text = jax.jit(jax.grad(score, argnums=1)).lower(fixed, x).as_text()
        assert text.count("jaxcnn_winograd_conv_transformed") == 6   # a, b, c: forward and input gradient
        got = jax.jit(jax.value_and_grad(score, argnums=(0, 1)))(fixed, x)
        ref = jax.jit(jax.value_and_grad(score, argnums=(0, 1)))(variables, x)
    assert _rel(got[0], ref[0]) < TOL
    assert _rel(got[1][1], ref[1][1]) < TOL                                 # the input gradient
    for name in ("a", "b", "c"):                                            # the weight gradients: oneDNN's
        assert _rel(got[1][0]["params"][name]["kernel"], ref[1][0]["params"][name]["kernel"]) < 1e-4


def test_with_transforms_only_where_they_run_and_remembered_per_arrays():
    net = _Net()
    variables = net.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
    assert winograd.with_transforms(variables) is variables                # 8 devices: XLA's convolutions
    with cpu.mode("fast"):
        with cpu.winograd_disabled():
            assert winograd.with_transforms(variables) is variables
        bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
        assert winograd.with_transforms(bf16) is bf16                       # float32 kernels only
        first = winograd.with_transforms(variables)
        assert winograd.with_transforms(first) is first                     # already there
        again = winograd.with_transforms({"params": variables["params"]})
        assert again[winograd.COLLECTION] is first[winograd.COLLECTION]     # the same arrays: made once
        params = jax.tree.map(lambda a: a + 0, variables["params"])        # new arrays, same shapes
        fresh = winograd.with_transforms({"params": params})
        assert fresh[winograd.COLLECTION] is not first[winograd.COLLECTION]
        entries = len(winograd._remembered)
        del params, fresh
        gc.collect()
        assert len(winograd._remembered) == entries - 1                      # gone with its parameters
        as_numpy = jax.tree.map(np.asarray, variables)                      # mutable arrays: never remembered
        winograd.with_transforms(as_numpy)
        own = winograd.with_transforms({"params": jax.tree.map(lambda a: a + 0, variables["params"])},
                                       remember=False)                      # held by the caller only
        assert len(winograd._remembered) == entries - 1 and winograd.COLLECTION in own


def test_eligible_transformed_takes_wide_layers_with_few_tiles():
    def takes(x_shape, w_shape, strides=(1, 1), groups=1):
        return winograd.eligible_transformed(jnp.zeros(x_shape), jnp.zeros(w_shape), strides, ((1, 1), (1, 1)),
                                             (1, 1), groups)
    assert takes((1, 4, 4, 512), (3, 3, 512, 512))       # one tile of 512 channels: 3.8 -> 2.4 ms
    assert takes((1, 16, 16, 512), (3, 3, 512, 512))     # style transfer's conv4: 16 tiles
    assert not _takes((1, 16, 16, 512), (3, 3, 512, 512))  # (without transforms: the direct one)
    assert not takes((1, 4, 4, 192), (3, 3, 192, 384))   # one tile of GoogLeNet's 5b: the direct one wins
    assert takes((8, 56, 56, 64), (3, 3, 64, 64))        # where the plain Winograd runs, this does too
    assert not takes((1, 16, 16, 512), (3, 3, 512, 512), strides=(2, 2))
    assert not takes((1, 16, 16, 512), (3, 3, 256, 512), groups=2)


def test_input_optimisation_and_attacks_convolve_with_transforms(monkeypatch):
    from jaxcnn.inputopt import attacks, objectives            # noqa: PLC0415 (only this test needs them)
    from jaxcnn.inputopt.optimize import InputOptimizer
    net = _Net()
    variables = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    used = []
    real = winograd.conv_transformed
    monkeypatch.setattr(winograd, "conv_transformed", lambda *a: used.append(a[1].shape) or real(*a))
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    with cpu.mode("fast"):
        InputOptimizer(net, variables, steps=2, shard=False).run(objectives.channel("c", 3), x)
        assert len(used) == 3
        adv = attacks.pgd(net, variables, x, [0, 1], eps=0.05, steps=2)
        assert len(used) > 3 and adv.images.shape == x.shape   # every unrolled step, the summary
