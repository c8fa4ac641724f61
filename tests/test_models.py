"""Every registered model, without allocating: output shapes/dtypes, features, bad input.

``jax.eval_shape`` traces each model at its native resolution (cheap); the
per-family test files run the numerics (NaN, bf16, gradients, training mode)
and tests/test_parity.py compares against torchvision.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn.weights.torchvision import variable_shapes

# the package's own models (a test file may register tests/tiny_model.py's in the same process)
MODELS = [n for n in jaxcnn.list_models() if jaxcnn.model_info(n).family != "tiny"]
# Deeper siblings that only repeat a default model's blocks (DenseNet-121's, ResNet-50's, FCN-ResNet-50's)
# take 5-13 s each to trace on 2 cores: their shape tests run with -m slow (their bad-input checks,
# which stop before tracing, by default)
DEEP_REPEATS = {"densenet161", "densenet169", "densenet201", "resnet101", "resnet152", "fcn_resnet101"}


def _traced(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in DEEP_REPEATS else n for n in names]


TRACED = _traced(MODELS)


@functools.lru_cache(maxsize=None)
def _model_and_shapes(name, options=()):
    """The model and its variable shapes, traced once per (name, options) for all the tests below."""
    model = jaxcnn.create_model(name, **dict(options))
    return model, variable_shapes(model, jaxcnn.model_info(name).resolution)


def _apply_shapes(name, shape, input_dtype=jnp.float32, **options):
    model, variables = _model_and_shapes(name, tuple(sorted(options.items())))
    x = jax.ShapeDtypeStruct(shape, input_dtype)
    return model, variables, jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)


@pytest.mark.parametrize("name", TRACED)
def test_output_contract(name):
    info = jaxcnn.model_info(name)
    r = info.resolution
    # the default head (the variable shapes traced once, shared with the state-dict test below);
    # num_classes is tested per family
    model, variables, (logits, feats) = _apply_shapes(name, (2, r, r, 3))
    classes = jaxcnn.create_model(name).num_classes
    if info.task == "segmentation":
        assert logits.shape == (2, r, r, classes)
    else:
        assert logits.shape == (2, classes)
        assert feats.get("pre_logits") is None or feats["pre_logits"].shape[0] == 2
    assert logits.dtype == jnp.float32
    assert isinstance(feats, dict) and len(feats) >= (1 if info.family == "linear" else 5)
    for key, f in feats.items():
        assert f.shape[0] == 2, key
    assert jaxcnn.count_params(variables) > 0
    assert jaxcnn.count_flops(model, r, variables) > 0


@pytest.mark.parametrize("name", TRACED)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
    r = jaxcnn.model_info(name).resolution
    _, variables, (logits, feats) = _apply_shapes(name, (1, r, r, 3), dtype="bfloat16")
    assert logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    assert any(f.dtype == jnp.bfloat16 for f in feats.values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,dtype,message", [
    ((64, 64, 3), jnp.float32, "rank 4"),
    ((1, 64, 64, 1), jnp.float32, "3 colour channels"),
    ((1, 3, 64, 64), jnp.float32, "NCHW"),
    ((1, 64, 64, 3), jnp.uint8, "floating-point"),
])
def test_bad_input_is_one_line_error(name, shape, dtype, message):
    model = jaxcnn.create_model(name)
    with pytest.raises(ValueError, match=message) as e:   # refused before any variable is read
        jax.eval_shape(lambda x: model.apply({}, x, train=False), jax.ShapeDtypeStruct(shape, dtype))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", _traced([n for n in MODELS if jaxcnn.model_info(n).torchvision]))
def test_state_dict_round_trip_covers_every_variable(name):
    # every Flax variable has exactly one torch key and back: no orphans on either side
    model, shapes = _model_and_shapes(name)
    fake = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    from jaxcnn.weights import convert_state_dict, to_torch_state_dict
    state = to_torch_state_dict(fake)
    assert len(state) == len(jax.tree_util.tree_leaves(shapes))
    back = convert_state_dict(state, model, family=jaxcnn.model_info(name).family,
                              resolution=jaxcnn.model_info(name).resolution)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(fake)


@pytest.mark.parametrize("name", ["googlenet", "inception_v1", "inception_v3"])
def test_the_smallest_input_reaches_every_layer(name):
    """At ``MIN_SIZE`` (a hand-counted constant in these families) every feature map holds pixels, so the
    global pool averages something; one pixel less is refused."""
    m = type(jaxcnn.create_model(name)).MIN_SIZE
    _, _, (logits, feats) = _apply_shapes(name, (1, m, m, 3))
    assert logits.shape[0] == 1 and not [k for k, f in feats.items() if 0 in f.shape]
    with pytest.raises(ValueError, match=f"at least {m}x{m}"):
        _apply_shapes(name, (1, m - 1, m - 1, 3))
