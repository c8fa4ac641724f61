"""A small CNN trained on scikit-learn's handwritten digits, shared by the input-optimisation tests.

Real data (1,797 8x8 digits shipped with scikit-learn, upsampled to 16 px
RGB), a real classifier (about 95% held-out accuracy after a few seconds of
training), so that visualizations, attacks and attributions are about
something. Trained once per test session (``functools.cache``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn.data.sources import digits
from jaxcnn.imagenet import preprocess
from tests.tiny_model import TinyCNN

SIZE = 16


@functools.cache
def digits_classifier(steps: int = 400):
    """(model, variables, test images (N, 16, 16, 3) float32 in [0, 1], test labels, test accuracy)."""
    train, test = digits("train", SIZE), digits("test", SIZE)
    x_train = jnp.asarray(train.images, jnp.float32) / 255.0
    y_train = jnp.asarray(train.labels)
    model = TinyCNN(num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    tx = optax.adam(1e-2)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt_state, idx):
        def loss_fn(params):
            logits, updates = model.apply({**variables, "params": params}, preprocess(x_train[idx]), train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits[0], y_train[idx]).mean(), updates
        (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        upd, opt_state = tx.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], upd), **updates}, opt_state

    rng = np.random.default_rng(0)
    for _ in range(steps):
        variables, opt_state = step(variables, opt_state, rng.integers(0, len(y_train), 64))
    x_test = np.asarray(test.images, np.float32) / 255.0
    logits, _ = jax.jit(lambda v, x: model.apply(v, preprocess(x)))(variables, x_test)
    accuracy = float(np.mean(np.argmax(logits, -1) == test.labels))
    return model, variables, x_test, np.asarray(test.labels), accuracy


def write_weights_and_photo(directory) -> tuple[str, str]:
    """The digits classifier's weights as a torchvision-style ``.safetensors`` file and one held-out digit
    as a PNG in ``directory``, for the command-line tests: ``(weights path, photo path)``."""
    import os

    from PIL import Image

    from jaxcnn.weights import write_state_dict
    from jaxcnn.weights.torchvision import to_torch_state_dict
    from tests.tiny_model import register

    register()
    _, variables, images, *_ = digits_classifier()
    path, photo = os.path.join(directory, "digits.safetensors"), os.path.join(directory, "seven.png")
    write_state_dict(to_torch_state_dict(variables), path)
    Image.fromarray((np.asarray(images[0]) * 255).astype(np.uint8)).save(photo)
    return path, photo
