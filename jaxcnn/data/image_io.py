"""Reading images and the evaluation transform (resize shorter side, center crop).

``load_image`` and the resize/crop helpers use float32 HWC arrays of pixel values
in [0, 1]; ``jaxcnn.preprocess`` turns them into model input. The data sources
read uint8 RGB instead (``read_rgb``, ``decode_rgb``, ``to_rgb_uint8``).
Decoding and resizing use Pillow.

``Encoded`` is an image file's bytes not yet decoded: sources that hold encoded
files hand them out (``src.encoded(i)``) so that a transform can decode them the
way its output needs (``decode_resized_crop``: a JPEG decoded at 1/2, 1/4 or 1/8
scale when the crop allows, ``jaxcnn.data.transforms.random_resized_crop``).
"""

from __future__ import annotations

import dataclasses
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


_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def unreadable(name: str, e: BaseException) -> ValueError:
    """The one-line error for an image file Pillow cannot read."""
    why = "not an image format Pillow knows" if isinstance(e, UnidentifiedImageError) else str(e) or type(e).__name__
    return ValueError(f"{name}: not a readable image ({why})")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """An image file's bytes (JPEG, PNG, ...) and the name its errors report (the path, or a record's name)."""

    data: bytes
    name: str

    def decode(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, decoded in full; ValueError naming the file if it is unreadable."""
        return decode_rgb(self.data, self.name)

    def size(self) -> tuple[int, int]:
        """(height, width), from the header alone."""
        try:
            with Image.open(io.BytesIO(self.data)) as im:
                return im.size[1], im.size[0]
        except _ERRORS as e:
            raise unreadable(self.name, e) from None


def as_rgb_array(image) -> np.ndarray:
    """An example's image as (H, W, 3) uint8: ``Encoded`` files decoded, arrays as they are."""
    return image.decode() if isinstance(image, Encoded) else image


def draft_scale(crop_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """The largest of 1, 2, 4, 8 by which a JPEG may be decoded smaller so that the crop ``crop_hw`` still has
    at least ``out_hw`` pixels: the resize after it still shrinks, so no detail of the output is lost to
    the reduced decode."""
    s = 1
    while s < 8 and crop_hw[0] >= 2 * s * out_hw[0] and crop_hw[1] >= 2 * s * out_hw[1]:
        s *= 2
    return s


def _rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_resized_crop(image: Encoded, box: tuple[int, int, int, int], out_hw: tuple[int, int], resample: int,
                        draft: bool = True) -> np.ndarray:
    """The crop ``box`` = (top, left, height, width) of the encoded ``image``, resized to ``out_hw`` with
    ``resample``: (H, W, 3) uint8 RGB.

    Without a reduced decode (``draft=False``, not a JPEG, or a crop too small, ``draft_scale``) the pixels
    equal decoding in full, cropping and resizing with Pillow (torchvision's ``RandomResizedCrop`` on a PIL
    image). With it, libjpeg decodes at 1/s scale in the DCT domain (Pillow's ``Image.draft``), which skips
    most of the decoding work, and the box, divided by s, is resized from that smaller image (Pillow's
    ``resize(box=...)``): different pixels from a full decode, as a different resampling filter would give
    (``tests/test_loader_workers.py`` bounds the difference), and the same for the same bytes and box, so a
    run stays reproducible. Greyscale images are cropped and resized as one channel, then repeated to RGB
    (the same pixels as converting first, three times less work).
    """
    top, left, ch, cw = box
    try:
        with Image.open(io.BytesIO(image.data)) as im:
            s = draft_scale((ch, cw), out_hw) if draft and im.format == "JPEG" else 1
            if s > 1:
                im.draft(im.mode, (im.size[0] // s, im.size[1] // s))
            im.load()
            if im.mode not in ("RGB", "L"):   # CMYK, palette, alpha: convert before resampling
                im = im.convert("RGB")
            size = (out_hw[1], out_hw[0])
            if s > 1:
                out = im.resize(size, resample, box=(left / s, top / s, (left + cw) / s, (top + ch) / s))
            else:
                out = im.crop((left, top, left + cw, top + ch)).resize(size, resample)
            return np.asarray(_rgb(out))
    except _ERRORS as e:
        raise unreadable(image.name, e) from None


def decode_resized(image: Encoded, out_hw: tuple[int, int], resample: int) -> np.ndarray:
    """The whole encoded ``image`` resized to ``out_hw``: the pixels of decoding in full and resizing with
    Pillow, without the array copies in between."""
    try:
        with Image.open(io.BytesIO(image.data)) as im:
            im.load()
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            if im.size != (out_hw[1], out_hw[0]):
                im = im.resize((out_hw[1], out_hw[0]), resample)
            return np.asarray(_rgb(im))
    except _ERRORS as e:
        raise unreadable(image.name, e) from None


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Decodes encoded image bytes (JPEG/PNG/...) to (H, W, 3) uint8 RGB; ValueError naming ``name`` if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except _ERRORS as e:
        raise unreadable(name, e) from None


def read_encoded(path: str | os.PathLike) -> Encoded:
    """The bytes of the image file ``path``, not decoded; ValueError naming the file if it cannot be read."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return Encoded(f.read(), path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to (H, W, 3) uint8 RGB; ValueError naming the file if it is unreadable."""
    return read_encoded(path).decode()


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
