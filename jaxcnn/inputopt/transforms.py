"""Robustness transforms applied to the image at every ascent step (a fresh random draw per image).

Optimising an objective through random jitter, scaling and rotation finds
images that excite the network robustly rather than adversarial
high-frequency patterns. Each transform is a frozen dataclass
``(images (B, H, W, C), key) -> images`` of the same shape, differentiable,
and traced into the compiled loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Random translation by up to ``pixels`` in x and y (reflection padding)."""

    pixels: int

    def __call__(self, x, key):
        n = self.pixels
        if n <= 0:
            return x
        b, h, w, c = x.shape
        padded = jnp.pad(x, ((0, 0), (n, n), (n, n), (0, 0)), mode="reflect")
        offsets = jax.random.randint(key, (b, 2), 0, 2 * n + 1)
        return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, offsets)


def _affine(x, matrices):
    """Resamples each image (bilinear, reflected edges) with its 2x2 ``matrices[b]`` about the centre."""
    b, h, w, c = x.shape
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                          jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")
    grid = jnp.stack([yy.ravel(), xx.ravel()])                     # (2, H*W) output coordinates
    src = jnp.einsum("bij,jp->bip", matrices, grid)                # where each output pixel samples from
    src = src + jnp.array([(h - 1) / 2, (w - 1) / 2])[None, :, None]

    def one(image, coords):
        sample = lambda ch: map_coordinates(ch, [coords[0], coords[1]], order=1, mode="reflect")
        return jax.vmap(sample, in_axes=2, out_axes=1)(image).reshape(h, w, c)

    return jax.vmap(one)(x, src)


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zoom by a factor drawn uniformly from ``scales`` (1.05 = 5% larger)."""

    scales: Sequence[float] = (0.95, 0.975, 1.0, 1.025, 1.05)

    def __call__(self, x, key):
        s = jax.random.choice(key, jnp.asarray(self.scales, jnp.float32), (x.shape[0],))
        inv = (1.0 / s)[:, None, None] * jnp.eye(2)[None]
        return _affine(x, inv)


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotation by an angle (degrees) drawn uniformly from ``degrees``."""

    degrees: Sequence[float] = tuple(range(-5, 6))

    def __call__(self, x, key):
        a = jax.random.choice(key, jnp.asarray(self.degrees, jnp.float32), (x.shape[0],)) * (math.pi / 180)
        cos, sin = jnp.cos(a), jnp.sin(a)
        inv = jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)  # rotation by -a
        return _affine(x, inv)


def standard_transforms(size: int = 224) -> tuple:
    """Jitter, scale, rotate, jitter, with amplitudes proportional to the image ``size``."""
    j = max(1, round(size * 8 / 224))
    return (Jitter(j), RandomScale(), RandomRotate(), Jitter(max(1, j // 2)))


def apply_transforms(transforms: Sequence, x, key):
    """Applies ``transforms`` in order, each with its own key."""
    for t, k in zip(transforms, jax.random.split(key, max(len(transforms), 1))):
        x = t(x, k)
    return x
