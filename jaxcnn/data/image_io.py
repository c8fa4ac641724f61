"""Reading images and the evaluation transform (resize shorter side, center crop).

Images are float32 HWC arrays of pixel values in [0, 1]; ``jaxcnn.preprocess``
turns them into model input. Decoding and resizing use Pillow.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to an (H, W, 3) float32 array in [0, 1] (grey/RGBA converted to RGB)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8))


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the shorter side is ``size`` (bilinear, antialiased), keeping the aspect ratio."""
    h, w = img.shape[:2]
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(_to_pil(img).resize(new, Image.BILINEAR), np.float32) / 255.0


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` crop (the image must be at least that large)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the crop {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def sample_photos() -> dict[str, np.ndarray]:
    """Real photos that ship with scikit-image (no download): name -> (H, W, 3) float32 in [0, 1]."""
    from skimage import data
    return {name: getattr(data, name)().astype(np.float32) / 255.0 for name in ("chelsea", "coffee", "astronaut")}
