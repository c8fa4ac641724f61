"""Per-example augmentation on uint8 HWC images, deterministic given a NumPy Generator.

The loader hands each example a generator seeded by (seed, example index),
so the same run sees the same augmented images however it is split over
processes or restarted.
"""

from __future__ import annotations

import numpy as np


def translate(image: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shifts by up to ``max_shift`` pixels in x and y (zero fill): a pad-and-random-crop."""
    if max_shift <= 0:
        return image
    h, w = image.shape[:2]
    padded = np.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=2)
    return padded[dy:dy + h, dx:dx + w]


def hflip(image: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Horizontal reflection with probability ``p``."""
    return image[:, ::-1] if rng.random() < p else image


def make_augment(*, flip: bool, max_shift: int):
    """The training-time transform ``(example, rng) -> example`` used by the loader."""

    def augment(example: dict, rng: np.random.Generator) -> dict:
        image = translate(example["image"], rng, max_shift)
        if flip:
            image = hflip(image, rng)
        return {**example, "image": np.ascontiguousarray(image)}

    return augment
