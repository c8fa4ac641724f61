"""Reading images and the evaluation transform (resize shorter side, center crop).

``load_image`` and the resize/crop helpers use float32 HWC arrays of pixel values
in [0, 1]; ``jaxcnn.preprocess`` turns them into model input. The data sources
read uint8 RGB instead (``read_rgb``, ``decode_rgb``, ``to_rgb_uint8``).
Resizing uses Pillow.

``Encoded`` is an image file's bytes not yet decoded: sources that hold encoded
files hand them out (``src.encoded(i)``) so that a transform can decode them the
way its output needs (``decode_resized_crop``: a JPEG decoded at 1/2, 1/4 or 1/8
scale when the crop allows, ``jaxcnn.data.transforms.random_resized_crop``).
JPEGs are decoded by simplejpeg where it is installed (libjpeg-turbo, as in
Pillow: the same pixels, less overhead; ``benchmarks/pipeline.py``), the rest by
Pillow.
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

try:   # libjpeg-turbo without Pillow's overhead: the same pixels (tests/test_loader_workers.py), faster
    import simplejpeg as _simplejpeg
except ImportError:   # Pillow decodes everything
    _simplejpeg = None
FAST_JPEG = _simplejpeg is not None   # benchmarks/pipeline.py turns it off to compare


def unreadable(name: str, e: BaseException) -> ValueError:
    """The one-line error for an image file Pillow cannot read."""
    why = "not an image format Pillow knows" if isinstance(e, UnidentifiedImageError) else str(e) or type(e).__name__
    return ValueError(f"{name}: not a readable image ({why})")


def _jpeg_header(data: bytes):
    """simplejpeg's (height, width, colorspace) of a JPEG it decodes like Pillow (YCbCr or greyscale), else None."""
    if not FAST_JPEG or data[:2] != b"\xff\xd8":
        return None
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (h, w, colorspace) if colorspace in ("YCbCr", "Gray") else None


def _pixels(data: bytes, scale: int = 1) -> tuple[np.ndarray, int]:
    """``data`` decoded at 1/``scale`` (JPEGs only; 1 for anything else): ((H, W, 3) RGB or (H, W) greyscale
    uint8, the scale applied).

    YCbCr and greyscale JPEGs are decoded by simplejpeg (libjpeg-turbo, like Pillow, with the same settings:
    the same pixels, with less overhead), everything else, and anything simplejpeg refuses, by Pillow (its
    errors are the ones reported). The reduced decodes are libjpeg's DCT scaling in both (Pillow's ``draft``).
    """
    header = _jpeg_header(data)
    if header is not None:
        h, w, colorspace = header
        out = (-(-h // scale), -(-w // scale))
        try:
            kw = {} if scale == 1 else {"min_height": out[0], "min_width": out[1], "min_factor": scale}
            a = _simplejpeg.decode_jpeg(data, colorspace="GRAY" if colorspace == "Gray" else "RGB", **kw)
            if a.shape[:2] == out:
                return (a[..., 0] if a.shape[-1] == 1 else a), scale
        except ValueError:
            pass
    with Image.open(io.BytesIO(data)) as im:
        applied = 1
        if scale > 1 and im.format == "JPEG":
            width = im.size[0]
            drafted = im.draft(im.mode, (width // scale, im.size[1] // scale))
            applied = round(width / drafted[1][2]) if drafted else 1   # the box is the full image at 1/scale
        im.load()
        return np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB")), applied   # CMYK, palette: RGB


def _rgb_array(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1)


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
        header = _jpeg_header(self.data)
        if header is not None:
            return header[:2]
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
    size = (out_hw[1], out_hw[0])
    try:
        a, s = _pixels(image.data, draft_scale((ch, cw), out_hw) if draft else 1)   # s: 1 for a file not JPEG
        if s > 1:
            out = Image.fromarray(a).resize(size, resample, box=(left / s, top / s, (left + cw) / s, (top + ch) / s))
        else:
            out = Image.fromarray(np.ascontiguousarray(a[top:top + ch, left:left + cw])).resize(size, resample)
        return _rgb_array(np.asarray(out))
    except _ERRORS as e:
        raise unreadable(image.name, e) from None


def decode_resized(image: Encoded, out_hw: tuple[int, int], resample: int) -> np.ndarray:
    """The whole encoded ``image`` resized to ``out_hw``: the pixels of decoding in full and resizing with
    Pillow, without the array copies in between."""
    try:
        a, _ = _pixels(image.data)
        if a.shape[:2] != tuple(out_hw):
            a = np.asarray(Image.fromarray(a).resize((out_hw[1], out_hw[0]), resample))
        return _rgb_array(a)
    except _ERRORS as e:
        raise unreadable(image.name, e) from None


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """Decodes encoded image bytes (JPEG/PNG/...) to (H, W, 3) uint8 RGB; ValueError naming ``name`` if unreadable."""
    try:
        return _rgb_array(_pixels(data)[0])
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
