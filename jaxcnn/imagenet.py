"""ImageNet conventions: normalization and class names.

Models take images normalized like torchvision's (``(x - mean) / std`` with
pixel values ``x`` in [0, 1]); input optimization works in pixel space by
composing ``preprocess`` with the model and ``deprocess`` to go back.
"""

from __future__ import annotations

import functools
from importlib import resources

import jax.numpy as jnp
import numpy as np

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def preprocess(pixels, *, gray: bool = False):
    """(..., 3) float pixel values in [0, 1] -> normalized model input (same shape, float).

    Integer (and boolean) arrays are refused, not scaled: a uint8 image holds 0-255, and dividing
    by 255 is the caller's choice to make (``images.astype(np.float32) / 255``). A last axis other
    than 3 is refused too; with ``gray=True`` a single channel is repeated to three (grey images).
    """
    x = jnp.asarray(pixels)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"preprocess takes float pixel values in [0, 1], got {np.dtype(x.dtype).name} "
                         f"(for 0-255 images divide by 255 first)")
    channels = x.shape[-1] if x.ndim else None
    if gray and channels == 1:
        x = jnp.broadcast_to(x, (*x.shape[:-1], 3))
    elif channels != 3:
        hint = " (pass gray=True to repeat one channel to three)" if channels == 1 else ""
        raise ValueError(f"preprocess takes (..., 3) RGB pixel values, got shape {tuple(x.shape)}{hint}")
    return (x - jnp.asarray(MEAN)) / jnp.asarray(STD)


def deprocess(x):
    """Normalized model input -> (..., 3) pixel values (not clipped)."""
    return jnp.asarray(x) * jnp.asarray(STD) + jnp.asarray(MEAN)


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in torchvision's label order."""
    text = resources.files("jaxcnn").joinpath("imagenet_classes.txt").read_text()
    return tuple(line for line in text.splitlines() if line)
