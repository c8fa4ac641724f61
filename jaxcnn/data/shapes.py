"""A generated segmentation data set: coloured shapes on textured backgrounds (offline, deterministic).

Each ``size`` x ``size`` image has a textured background (a random base
colour, a random sinusoidal grating and per-pixel noise) and one to three
shapes drawn over it, later ones occluding earlier ones. The class of a pixel
is the *kind* of shape covering it, whatever its colour:

=====  ===========  ==================================================
class  name         shape
=====  ===========  ==================================================
0      background
1      disc         a filled circle
2      square       an axis-aligned filled square
3      triangle     a filled upward-pointing isosceles triangle
=====  ===========  ==================================================

Shape colours are drawn at random (away from the background's mean colour),
so colour alone does not give the label: a model must see the outline. The
mask is computed from the same geometry that paints the image, so it
corresponds exactly. Like PASCAL VOC, an optional ``ignore_border`` of pixels
around every shape outline is marked ``IGNORE_LABEL`` (255).

Example ``i`` of a split comes from a generator seeded by (split, i), so a
data set is the same on every machine and an example never depends on how
many others were asked for.
"""

from __future__ import annotations

import functools

import numpy as np

IGNORE_LABEL = 255
CLASS_NAMES = ("background", "disc", "square", "triangle")
_SPLIT_SEEDS = {"train": 0, "test": 1}
_DEFAULT_EXAMPLES = {"train": 512, "test": 128}


def _render(rng: np.random.Generator, size: int, ignore_border: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    base = rng.uniform(40, 215, 3)
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6), rng.uniform(0, 2 * np.pi)
    grating = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
    image = (base + rng.uniform(15, 40) * grating[..., None] * rng.uniform(-1, 1, 3)
             + rng.normal(0, 12, (size, size, 3)))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 4))
        r = rng.uniform(0.12, 0.25) * size                      # half-size of the shape
        cy, cx = rng.uniform(r, size - r, 2)
        if kind == 1:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        elif kind == 2:
            inside = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
        else:  # apex at (cy - r, cx), base from (cy + r, cx - r) to (cy + r, cx + r)
            inside = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - base).max() < 70:  # visible against the background
            colour = rng.uniform(0, 255, 3)
        shade = colour + rng.normal(0, 8, (size, size, 3))
        image = np.where(inside[..., None], shade, image)
        mask[inside] = kind
    if ignore_border > 0:  # VOC-style: each shape's outermost ring of ignore_border pixels
        band = np.zeros_like(mask, bool)
        for c in np.unique(mask[mask > 0]):
            region = core = mask == c
            for _ in range(ignore_border):  # erosion by the 4-neighbourhood; the frame does not erode
                p = np.pad(core, 1, mode="edge")
                core = core & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
            band |= region & ~core
        mask = np.where(band, IGNORE_LABEL, mask).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), mask


@functools.lru_cache(maxsize=8)
def _generate(split: str, size: int, num_examples: int, ignore_border: int) -> tuple[np.ndarray, np.ndarray]:
    seed = _SPLIT_SEEDS[split]
    pairs = [_render(np.random.default_rng([seed, i, size]), size, ignore_border) for i in range(num_examples)]
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    images.setflags(write=False)
    masks.setflags(write=False)
    return images, masks


class SegmentationArraySource:
    """In-memory images (N, H, W, 3) uint8 and masks (N, H, W) uint8 (class ids, ``ignore_label`` excluded).

    ``source[i]`` is ``{"image": (H, W, 3) uint8, "mask": (H, W) uint8}``.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, num_classes: int, *, name: str = "arrays",
                 ignore_label: int = IGNORE_LABEL, class_names: tuple[str, ...] | None = None):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
            raise ValueError(f"{name}: masks must be uint8 {images.shape[:3]}, got {masks.dtype} {masks.shape}")
        labels = np.unique(masks)
        bad = labels[(labels >= num_classes) & (labels != ignore_label)]
        if bad.size:
            raise ValueError(f"{name}: mask values must be in [0, {num_classes}) or {ignore_label}, found {bad[:5]}")
        self.images, self.masks, self.num_classes, self.name = images, masks, num_classes, name
        self.ignore_label = ignore_label
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[i], "mask": self.masks[i]}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def shapes(split: str, size: int = 32, num_examples: int | None = None,
           ignore_border: int = 1) -> SegmentationArraySource:
    """The shapes data set: ``split`` ``train`` (512 examples) or ``test`` (128), ``size`` px, 4 classes.

    Args:
      split: ``train`` or ``test`` (generated from different seeds).
      size: image side in pixels (at least 16).
      num_examples: how many examples (default 512 for train, 128 for test).
      ignore_border: width in pixels of the ``IGNORE_LABEL`` band along shape outlines (0: none).
    """
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"shapes: unknown split {split!r}; valid: {', '.join(_SPLIT_SEEDS)}")
    if size < 16:
        raise ValueError(f"shapes: size must be at least 16, got {size}")
    n = _DEFAULT_EXAMPLES[split] if num_examples is None else int(num_examples)
    if n < 1:
        raise ValueError(f"shapes: num_examples must be positive, got {num_examples}")
    images, masks = _generate(split, int(size), n, int(ignore_border))
    return SegmentationArraySource(images, masks, len(CLASS_NAMES), name=f"shapes/{split}",
                                   class_names=CLASS_NAMES)
