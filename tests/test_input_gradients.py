"""Every family's gradient with respect to its input: finite, of the input's shape, reaching every image.

What the input-optimisation code (attacks, DeepDream, attributions) differentiates through. One
test over the families, each at the small input its own test file uses (AlexNet 64 px, VGG 37x45,
ResNet and SqueezeNet 64, GoogLeNet and the paper's GoogLeNet 64, Inception-v3 its minimum 75). The weights are
drawn here with NumPy from the variables' shapes (``jax.eval_shape``), so no initialisation is compiled, and
they are an argument of the compiled gradient rather than constants folded into it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn

CLASSES = 10

# (model, input (H, W)); the inception family compiles for 15-25 s on 2 cores and runs with -m slow,
# the rest cover the same layers (convolutions, pools, batch norm, concatenations) by default
CASES = [
    ("alexnet", (64, 64)), ("alexnet_twotower", (64, 64)), ("zfnet", (64, 64)),
    ("vgg11_bn", (37, 45)), ("resnet18", (64, 64)), ("squeezenet1_1", (64, 64)),
    pytest.param("googlenet", (64, 64), marks=pytest.mark.slow),
    pytest.param("inception_v3", (75, 75), marks=pytest.mark.slow),
    pytest.param("inception_v1", (64, 64), marks=pytest.mark.slow),
]


def synthetic_variables(model, x) -> dict:
    """He-scaled kernels, small biases, batch norm at identity statistics: activations of a sane range."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(0)

    def draw(path, s):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            return rng.standard_normal(s.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        if name in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        if name == "mean":
            return np.zeros(s.shape, s.dtype)
        return rng.uniform(-0.1, 0.1, s.shape).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("name,hw", CASES)
def test_input_gradient_is_finite_and_reaches_every_image(name, hw):
    model = jaxcnn.create_model(name, num_classes=CLASSES)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, *hw, 3)), jnp.float32)
    variables = synthetic_variables(model, x)
    grad = jax.jit(jax.grad(lambda v, x: model.apply(v, x, train=False)[0][:, 3].sum(), argnums=1))(variables, x)
    assert grad.shape == x.shape and grad.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(grad)))
    per_image = np.asarray(jnp.abs(grad).sum(axis=(1, 2, 3)))
    assert np.all(per_image > 0), per_image   # each image's logit depends on that image
