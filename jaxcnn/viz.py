"""Pictures: PNG writing, labelled image grids, heat-map overlays, filter mosaics (Pillow + matplotlib colormaps).

All functions take float images in [0, 1] (H, W, 3) or batches (N, H, W, 3)
and return uint8 arrays or write PNG files.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(image) -> np.ndarray:
    """[0, 1] floats -> uint8 (clipped, rounded)."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike, image) -> str:
    """Writes an (H, W, 3) [0, 1] image (or a uint8 array) as PNG, creating the directory; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    arr = np.asarray(image)
    Image.fromarray(arr if arr.dtype == np.uint8 else to_uint8(arr)).save(path)
    return path


def image_grid(images, *, cols: int | None = None, labels: Sequence[str] | None = None, pad: int = 2,
               scale: int = 1) -> np.ndarray:
    """(N, H, W, 3) [0, 1] images -> one uint8 grid image, optionally upscaled (nearest) and captioned."""
    images = np.asarray(images, np.float32)
    n, h, w, _ = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = h * scale, w * scale
    caption = 12 if labels else 0
    grid = np.full((rows * (h + pad + caption) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad + caption), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = to_uint8(np.repeat(np.repeat(im, scale, 0), scale, 1))
    if labels:
        pil = Image.fromarray(grid)
        draw = ImageDraw.Draw(pil)
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            draw.text((pad + c * (w + pad), pad + r * (h + pad + caption) + h), str(text)[: max(1, w // 6)],
                      fill=(0, 0, 0))
        grid = np.asarray(pil)
    return grid


def heatmap_overlay(image, heat, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """An (H, W, 3) image blended with a colour-mapped (h, w) map (resized to the image; min-max scaled)."""
    from matplotlib import colormaps
    image = np.asarray(image, np.float32)
    heat = np.asarray(heat, np.float32)
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / (span if span > 0 else 1.0)
    heat = np.asarray(Image.fromarray(to_uint8(heat)).resize(image.shape[1::-1], Image.BILINEAR), np.float32) / 255
    coloured = colormaps[cmap](heat)[..., :3]
    return to_uint8((1 - alpha) * image + alpha * coloured)


def filter_mosaic(kernels, *, cols: int | None = None, scale: int = 4, pad: int = 1) -> np.ndarray:
    """(kh, kw, 3, N) kernels (a first conv layer, or patch-space atoms) -> a uint8 mosaic, each tile min-max scaled."""
    k = np.asarray(kernels, np.float32)
    if k.ndim != 4 or k.shape[2] != 3:
        raise ValueError(f"kernels must be (kh, kw, 3, N); got {k.shape}")
    tiles = np.moveaxis(k, -1, 0)
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - lo) / np.where(hi > lo, hi - lo, 1.0)
    return image_grid(tiles, cols=cols, pad=pad, scale=scale)
