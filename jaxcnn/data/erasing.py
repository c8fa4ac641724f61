"""Random erasing (Zhong et al. 2020) with torchvision's ``RandomErasing`` semantics, on uint8 images.

torchvision erases a box of the *normalized* tensor (after ``ToTensor`` and
``Normalize``) and its ``value`` is in normalized units: ``value=0`` fills
the box with the data set's mean colour, ``value="random"`` with per-pixel
standard normal noise. Here images stay uint8 until the model normalizes
them on the device (``(x / 255 - MEAN) / STD``, ``jaxcnn.imagenet``), so
``value`` keeps those units and is mapped to pixels:
``pixel = round(255 * (MEAN + STD * value))``, clipped to 0-255. Thus
``value=0`` is the mean RGB (124, 116, 104), a per-channel triple is three
normalized values, and ``"random"`` draws ``value ~ N(0, 1)`` per pixel and
channel (noise with ImageNet's mean and spread, rounded and clipped).

The box: with probability ``p``, up to 10 tries of an area fraction uniform
in ``scale`` and an aspect ratio (height / width) log-uniform in ``ratio``;
``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area / ratio))``; the
first that fits strictly inside the image is placed uniformly, otherwise the
image is left as it is (torchvision's ``get_params``).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from jaxcnn.imagenet import MEAN, STD

Example = dict
Transform = Callable[[Example, np.random.Generator], Example]


def erase_box(h: int, w: int, rng: np.random.Generator, scale=(0.02, 0.33),
              ratio=(0.3, 3.3)) -> tuple[int, int, int, int] | None:
    """``(top, left, height, width)`` of the box to erase in an ``h`` x ``w`` image, or None when none fits."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(erase_area * aspect))), int(round(math.sqrt(erase_area / aspect)))
        if eh < h and ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


def normalized_to_pixels(value: np.ndarray) -> np.ndarray:
    """uint8 pixels whose normalized value (``(x / 255 - MEAN) / STD``) is nearest ``value`` (last axis RGB)."""
    pixels = 255.0 * (np.asarray(MEAN) + np.asarray(STD) * np.asarray(value, np.float64))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _check_value(value) -> None:
    if isinstance(value, str):
        if value != "random":
            raise ValueError(f"random erasing value {value!r}: valid: 'random', a number or three numbers "
                             "(normalized units; 0 = the mean colour)")
        return
    v = np.asarray(value, dtype=np.float64) if not isinstance(value, bool) else None
    if v is None or v.ndim > 1 or (v.ndim == 1 and v.size not in (1, 3)):
        raise ValueError(f"random erasing value {value!r}: valid: 'random', a number or three numbers "
                         "(normalized units; 0 = the mean colour)")


def random_erasing(p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0) -> Transform:
    """torchvision's ``RandomErasing(p, scale, ratio, value)`` on the uint8 ``"image"`` (see the module doc)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random erasing probability must be in [0, 1], got {p}")
    if not (0.0 <= scale[0] <= scale[1] <= 1.0):
        raise ValueError(f"random erasing scale must be (min, max) within [0, 1], got {tuple(scale)}")
    if not (0.0 < ratio[0] <= ratio[1]):
        raise ValueError(f"random erasing ratio must be (min, max) with 0 < min, got {tuple(ratio)}")
    _check_value(value)
    fill = None if isinstance(value, str) else normalized_to_pixels(np.broadcast_to(np.asarray(value, float), (3,)))

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if p <= 0 or rng.random() >= p:
            return example
        image = example["image"]
        box = erase_box(image.shape[0], image.shape[1], rng, scale, ratio)
        if box is None:
            return example
        top, left, eh, ew = box
        image = image.copy()
        patch = fill if fill is not None else normalized_to_pixels(rng.standard_normal((eh, ew, image.shape[2])))
        image[top:top + eh, left:left + ew] = patch
        return {**example, "image": image}

    return transform


__all__ = ["erase_box", "normalized_to_pixels", "random_erasing"]
