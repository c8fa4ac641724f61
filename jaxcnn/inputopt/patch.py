"""Adversarial patch (Brown et al. 2017): one universal patch that makes a model say ``target`` wherever it is put.

Training maximises E[log p(target | A(patch, x, l, s, r))] over images x of
a set and random placements: location l, size s (a fraction of the image
side) and rotation r ("expectation over transformation"), with Adam on the
patch pixels, clipped to [0, 1], run by ``problem.Ascent`` (one compiled
step per call on the CPU fast path, one ``lax.scan`` elsewhere). ``apply_patch`` pastes a patch at random placements;
``patch_success`` measures how often held-out images become ``target``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.ndimage import map_coordinates

from jaxcnn import cpu
from jaxcnn.inputopt import problem


def _place_one(image, patch, key, scale, max_degrees):
    """Pastes ``patch`` (P, P, 3) on ``image`` (H, W, 3) at a random size, angle and location."""
    h, w, _ = image.shape
    p = patch.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    side = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1]) * min(h, w)
    angle = jax.random.uniform(k2, (), minval=-max_degrees, maxval=max_degrees) * jnp.pi / 180
    half = side / 2 * (jnp.abs(jnp.cos(angle)) + jnp.abs(jnp.sin(angle)))   # half-extent of the rotated square
    lo = jnp.minimum(half, jnp.array([h / 2, w / 2]))
    centre = lo + jax.random.uniform(k3, (2,)) * (jnp.array([h, w]) - 2 * lo)
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    u = (cos * dy + sin * dx) * (p / side) + (p - 1) / 2          # patch coordinates of each image pixel
    v = (-sin * dy + cos * dx) * (p / side) + (p - 1) / 2
    inside = ((u >= -0.5) & (u <= p - 0.5) & (v >= -0.5) & (v <= p - 0.5)).astype(image.dtype)[..., None]
    sample = lambda ch: map_coordinates(ch, [u, v], order=1, mode="nearest")
    pasted = jax.vmap(sample, in_axes=2, out_axes=2)(patch)
    return image * (1 - inside) + pasted * inside


def apply_patch(images, patch, key, *, scale=(0.3, 0.5), max_degrees: float = 45.0):
    """(B, H, W, 3) images with ``patch`` pasted at an independent random placement each."""
    return _apply_patch(images, patch, key, scale=tuple(scale), max_degrees=float(max_degrees))


@functools.partial(cpu.jit, static_argnames=("scale", "max_degrees"))   # one program, not op by op
def _apply_patch(images, patch, key, *, scale, max_degrees):
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(_place_one, in_axes=(0, None, 0, None, None))(images, patch, keys, scale, max_degrees)


@functools.partial(cpu.jit, static_argnames=("patch_size",))
def _init(key, *, patch_size):
    k0, key = jax.random.split(key)
    patch = jax.random.uniform(k0, (patch_size, patch_size, 3))
    return (patch, optax.adam(0.0).init(patch)), key


def _step(consts, carry, k, *, model, batch_size, scale, max_degrees):
    """One Adam step on the patch over a random batch of the images, each at a random placement."""
    variables, images, target, lr = consts
    patch, opt_state = carry

    def loss(patch, idx, k):
        x = apply_patch(images[idx], patch, k, scale=scale, max_degrees=max_degrees)
        logits = problem.logits(model, variables, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.full((x.shape[0],), target)))

    ki, kp = jax.random.split(k)
    idx = jax.random.randint(ki, (batch_size,), 0, images.shape[0])
    value, g = jax.value_and_grad(loss)(patch, idx, kp)
    updates, opt_state = optax.adam(lr).update(g, opt_state, patch)
    return (jnp.clip(optax.apply_updates(patch, updates), 0, 1), opt_state), value


_loop = problem.Ascent(_step)


def train_patch(model, variables, images, target: int, *, patch_size: int | None = None, steps: int = 500,
                batch_size: int = 16, learning_rate: float = 0.05, scale=(0.3, 0.5), max_degrees: float = 45.0,
                key: int = 0):
    """A universal patch (P, P, 3) for ``target`` trained over ``images`` (N, H, W, 3); returns (patch, losses)."""
    problem.check_images01(images, "patch training images")
    problem.check_classes(int(target), problem.num_classes(model, variables, np.shape(images)))
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"patch scale must satisfy 0 < min <= max <= 1 (fractions of the image side), got {scale}")
    patch_size = patch_size or max(4, int(images.shape[1] * scale[1]))
    variables = problem.fixed_weights(variables)
    carry, key = _init(jax.random.key(key), patch_size=patch_size)
    consts = (variables, jnp.asarray(images, jnp.float32), jnp.int32(target), jnp.float32(learning_rate))
    (patch, _), losses = _loop(consts, carry, jax.random.split(key, steps), model=model, batch_size=batch_size,
                               scale=tuple(scale), max_degrees=float(max_degrees))
    return patch, np.asarray(losses)


def patch_success(model, variables, images, labels, patch, target: int, *, key: int = 0, scale=(0.3, 0.5),
                  max_degrees: float = 45.0) -> dict[str, float]:
    """Target rate with and without the patch over images whose label is not ``target`` (random placements)."""
    problem.check_images01(images)
    keep = np.asarray(labels) != target
    x = jnp.asarray(images, jnp.float32)[keep]
    patched = apply_patch(x, jnp.asarray(patch), jax.random.key(key), scale=tuple(scale), max_degrees=max_degrees)
    return {"images": int(keep.sum()), "target_rate_clean": float(jnp.mean(_predict(model, variables, x) == target)),
            "target_rate_patched": float(jnp.mean(_predict(model, variables, patched) == target))}


def _predict(model, variables, x):
    return np.argmax(np.asarray(problem.logits(model, variables, x)), -1)
