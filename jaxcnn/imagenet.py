"""ImageNet conventions: normalization and class names.

Models take images normalized like torchvision's (``(x - mean) / std`` with
pixel values ``x`` in [0, 1]); input optimization works in pixel space by
composing ``preprocess`` with the model and ``deprocess`` to go back.
"""

from __future__ import annotations

import functools
from importlib import resources

import jax.numpy as jnp

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def preprocess(pixels):
    """(..., 3) pixel values in [0, 1] -> normalized model input (same shape, float)."""
    return (jnp.asarray(pixels) - jnp.asarray(MEAN)) / jnp.asarray(STD)


def deprocess(x):
    """Normalized model input -> (..., 3) pixel values (not clipped)."""
    return jnp.asarray(x) * jnp.asarray(STD) + jnp.asarray(MEAN)


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in torchvision's label order."""
    text = resources.files("jaxcnn").joinpath("imagenet_classes.txt").read_text()
    return tuple(line for line in text.splitlines() if line)
