"""Reading images and the evaluation transform (resize shorter side, center crop).

``load_image`` and the resize/crop helpers use float32 HWC arrays of pixel values
in [0, 1]; ``jaxcnn.preprocess`` turns them into model input. The data sources
read uint8 RGB instead (``read_rgb``, ``decode_rgb``, ``to_rgb_uint8``).
Decoding and resizing use Pillow.
"""

from __future__ import annotations

import io
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


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Decodes encoded image bytes (JPEG/PNG/...) to (H, W, 3) uint8 RGB; ValueError naming ``name`` if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{name}: not a readable image ({e})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to (H, W, 3) uint8 RGB; ValueError naming the file if it is unreadable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    return decode_rgb(data, path)


def to_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from decoded pixels (H, W), (H, W, 1|3|4) uint8 or encoded bytes."""
    if isinstance(image, (bytes, bytearray)):
        return decode_rgb(bytes(image), name)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected (H, W) or (H, W, 1|3|4) pixels, got shape {image.shape}")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]
