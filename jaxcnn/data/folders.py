"""Image-folder data sources: classification class folders and segmentation image/mask pairs.

``ImageFolder(root)``: ``root/<class>/**/<file>.jpg|jpeg|png``; classes are the
sorted sub-folder names, labels their positions. ``SegmentationFolder(images,
masks, num_classes)``: images and index masks (palette or greyscale PNG)
matched by file stem, as in Pascal VOC's ``JPEGImages`` + ``SegmentationClass``
(``voc(root, split)`` reads a ``VOCdevkit/VOC2012`` folder with its
``ImageSets/Segmentation/<split>.txt`` lists).

Bad input. With ``verify=True`` (default) every file is checked when the source
is built: Pillow parses the header and runs ``verify()``, and a JPEG that does not
end in an end-of-image marker is decoded in full (catches truncated files, which
``verify()`` does not). An unreadable file is skipped, listed in ``src.skipped``
as ``(path, reason)`` and reported in one warning, or refused with a ValueError
naming it when ``strict=True``. A file that still fails to decode when read
raises a ValueError naming it (it is never replaced by another example, which
would silently change the data). For segmentation, a mask whose size differs
from its image, or with a value ``>= num_classes`` other than ``ignore_label``,
raises a ValueError naming the mask (checked at build time with ``verify=True``
and again on every read). ``verify=False`` skips the build-time pass (for
folders too large to read twice).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxcnn.data.image_io import read_encoded, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_JPEG_SUFFIXES = (".jpg", ".jpeg")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image (``None`` if it is), cheaply: header, ``verify()``, JPEG end marker."""
    try:
        with Image.open(path) as im:
            im.verify()
        if path.suffix.lower() in _JPEG_SUFFIXES:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 64))
                ends_well = b"\xff\xd9" in f.read()
            if not ends_well:  # truncated, or trailing bytes after the marker: decode to find out
                with Image.open(path) as im:
                    im.load()
    except UnidentifiedImageError:
        return "not an image format Pillow knows"
    except (OSError, SyntaxError, ValueError) as e:
        return str(e) or type(e).__name__
    return None


def _problems(paths: list[Path]) -> list[str | None]:
    """``image_problem`` of each path, in order, checked on threads (reading headers waits on the disk more
    than it computes)."""
    if len(paths) < 64:
        return [image_problem(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(image_problem, paths))


class _CheckedFiles:
    """Shared bad-file policy: skip and count (warn once), or refuse with ``strict``."""

    def __init__(self, name: str, strict: bool):
        self.name, self.strict = name, strict
        self.skipped: list[tuple[str, str]] = []

    def ok(self, path: Path, problem: str | None) -> bool:
        if problem is None:
            return True
        if self.strict:
            raise ValueError(f"{path}: not a readable image ({problem})")
        self.skipped.append((str(path), problem))
        return False

    def warn(self) -> None:
        if self.skipped:
            path, why = self.skipped[0]
            warnings.warn(f"{self.name}: skipped {len(self.skipped)} unreadable image file(s), "
                          f"first {path} ({why})", stacklevel=3)


class ImageFolder:
    """Classification images in class sub-folders; ``src[i]`` is ``{"image": uint8 (H, W, 3), "label": int32}``.

    ``classes`` fixes the class list (e.g. a validation folder uses the training
    folder's classes); by default it is the sorted sub-folder names of ``root``.
    """

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None,
                 strict: bool = False, verify: bool = True, name: str | None = None):
        root = Path(root)
        self.name = name or str(root)
        if not root.is_dir():
            raise ValueError(f"{root}: image folder not found (expected {root}/<class>/<image>.JPEG, e.g. ImageNet's "
                             "train and val folders; `jaxcnn fixture DIR` writes a small one)")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = found
        elif extra := sorted(set(found) - set(classes)):
            raise ValueError(f"{root}: class folder(s) {', '.join(extra[:5])} are not among the "
                             f"{len(classes)} known classes")
        if not classes:
            raise ValueError(f"{root}: no class sub-folders (expected {root}/<class>/<image>.jpg)")
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        check = _CheckedFiles(self.name, strict)
        listed = [(path, label) for label, cls in enumerate(self.classes) if (root / cls).is_dir()
                  for path in _image_files(root / cls)]
        problems = _problems([p for p, _ in listed]) if verify else [None] * len(listed)
        kept = [(p, label) for (p, label), why in zip(listed, problems) if check.ok(p, why)]
        self.files: list[Path] = [p for p, _ in kept]
        self.labels = np.asarray([label for _, label in kept], np.int32)
        self.skipped = check.skipped
        if not self.files:
            raise ValueError(f"{root}: no readable {'/'.join(IMAGE_SUFFIXES)} images in its class folders"
                             + (f" ({len(self.skipped)} skipped as unreadable)" if self.skipped else ""))
        check.warn()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": read_rgb(self.files[i]), "label": self.labels[i]}

    def encoded(self, i: int) -> dict:
        """Example ``i`` with its file's bytes, not decoded (``jaxcnn.data.image_io.Encoded``)."""
        return {"image": read_encoded(self.files[i]), "label": self.labels[i]}


def read_mask(path, name: str | None = None) -> np.ndarray:
    """Class indices (H, W) uint8 of a palette ("P") or greyscale ("L") mask image (a path or file object).

    ValueError naming the file (or ``name``) if it is unreadable or not an index image.
    """
    name = name or str(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"{name}: mask must be a palette or greyscale PNG of class indices, "
                                 f"got mode {im.mode}")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{name}: not a readable mask image ({e})") from None


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]


class SegmentationFolder:
    """Image/mask pairs matched by file stem; ``src[i]`` is ``{"image": uint8 (H, W, 3), "mask": uint8 (H, W)}``.

    Examples are the masks in ``masks_dir`` (or the given ``stems``); each needs an
    image with the same stem in ``images_dir`` (images without a mask are ignored,
    as in VOC). Mask values are class indices in ``[0, num_classes)`` or
    ``ignore_label``.
    """

    def __init__(self, images_dir: str | os.PathLike, masks_dir: str | os.PathLike, num_classes: int, *,
                 ignore_label: int = 255, stems: Sequence[str] | None = None, strict: bool = False,
                 verify: bool = True, name: str | None = None):
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        self.name = name or str(masks_dir)
        if not 0 < num_classes <= 255 or not 0 <= ignore_label <= 255:
            raise ValueError(f"{self.name}: need 0 < num_classes <= 255 and 0 <= ignore_label <= 255, "
                             f"got {num_classes}, {ignore_label}")
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise ValueError(f"{d}: folder not found")
        self.num_classes, self.ignore_label = num_classes, ignore_label
        images = {p.stem: p for p in _image_files(images_dir)}
        masks = {p.stem: p for p in _image_files(masks_dir)}
        if stems is None:
            stems = sorted(masks)
        check = _CheckedFiles(self.name, strict)
        self.pairs: list[tuple[Path, Path]] = []
        for stem in stems:
            if stem not in masks:
                raise ValueError(f"{masks_dir}: no mask for {stem!r}")
            if stem not in images:
                raise ValueError(f"{images_dir}: no image for mask {masks[stem]}")
            image, mask = images[stem], masks[stem]
            if verify:
                if not (check.ok(image, image_problem(image)) and check.ok(mask, image_problem(mask))):
                    continue
                self._check_mask(read_mask(mask), _image_size(image), mask)
            self.pairs.append((image, mask))
        self.skipped = check.skipped
        if not self.pairs:
            raise ValueError(f"{self.name}: no readable image/mask pairs"
                             + (f" ({len(self.skipped)} skipped as unreadable)" if self.skipped else ""))
        check.warn()

    def _check_mask(self, mask: np.ndarray, image_hw: tuple[int, int], path: Path) -> None:
        if mask.shape != tuple(image_hw):
            raise ValueError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                             f"{image_hw[0]}x{image_hw[1]}")
        bad = (mask >= self.num_classes) & (mask != self.ignore_label)
        if bad.any():
            raise ValueError(f"{path}: mask values {sorted(set(np.unique(mask[bad]).tolist()))[:5]} are not classes "
                             f"[0, {self.num_classes}) or the ignore label {self.ignore_label}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        image_path, mask_path = self.pairs[i]
        image, mask = read_rgb(image_path), read_mask(mask_path)
        self._check_mask(mask, image.shape[:2], mask_path)
        return {"image": image, "mask": mask}


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def voc(root: str | os.PathLike, split: str, **kwargs) -> SegmentationFolder:
    """Pascal VOC segmentation from ``root`` = ``VOCdevkit/VOC2012`` (21 classes, 255 = object borders, ignored).

    ``split`` names a list in ``ImageSets/Segmentation`` (``train``, ``val``,
    ``trainval``; ``test`` reads ``val``, whose masks are public).
    """
    root = Path(root)
    split = "val" if split == "test" else split
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise ValueError(f"{listing} not found: pass data_dir=<...>/VOCdevkit/VOC2012 from VOCtrainval_11-May-2012.tar")
    stems = listing.read_text().split()
    src = SegmentationFolder(root / "JPEGImages", root / "SegmentationClass", len(VOC_CLASSES), stems=stems,
                             name=f"voc2012/{split}", **kwargs)
    src.classes = list(VOC_CLASSES)
    return src
