"""Data sources: random-access sequences of ``{"image": uint8 (H, W, 3), "label": int}``.

Every data set reaches the loader (``jaxcnn.data.loader``) as such a source.
``digits`` is scikit-learn's 1,797 handwritten digits (8x8, shipped inside the
package, so it works offline): upsampled to ``size`` x ``size`` and repeated
to three channels, split 80/20 into train/test by a fixed stratified
permutation.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


class ArraySource:
    """In-memory images (N, H, W, 3) uint8 and labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, name: str = "arrays"):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}: labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}")
        self.images, self.labels, self.num_classes, self.name = images, labels.astype(np.int32), num_classes, name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[i], "label": self.labels[i]}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


@functools.lru_cache(maxsize=4)
def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    small = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small])
    return np.repeat(big[..., None], 3, axis=-1), d.target.astype(np.int32)


def digits(split: str, size: int = 32) -> ArraySource:
    """scikit-learn's digits as RGB ``size`` px images; ``split`` is ``train`` (80%) or ``test`` (20%)."""
    if split not in ("train", "test"):
        raise ValueError(f"digits: unknown split {split!r}; valid: train, test")
    images, labels = _digits(size)
    order = np.random.default_rng(0).permutation(len(labels))
    test = np.zeros(len(labels), bool)
    for c in range(10):  # stratified: every fifth example of each class is a test example
        test[order[labels[order] == c][::5]] = True
    keep = test if split == "test" else ~test
    return ArraySource(images[keep], labels[keep], 10, name=f"digits/{split}")


SOURCES = {"digits": digits}


def get_source(name: str, split: str, **kwargs) -> ArraySource:
    """A registered data source by name (``digits``; tfds and folders come with the input pipeline)."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")
    return SOURCES[name](split, **kwargs)
