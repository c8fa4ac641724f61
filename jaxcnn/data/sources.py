"""Data sources: random-access sequences of examples, and ``get_source``, the one way to name them.

A source has ``len(src)``, ``src[i]`` -> ``{"image": uint8 (H, W, 3), "label":
int32}`` (classification) or ``{"image", "mask": uint8 (H, W)}`` (segmentation,
255 = ignore), and attributes ``num_classes`` and ``name``. Images may be of any
size; a transform (``jaxcnn.data.transforms``) makes them one size for
batching. Every data set reaches the loader (``jaxcnn.data.loader``) as such a
source.

Registered names (``get_source(name, split, **kwargs)``):

- ``digits`` (kwarg ``size``): see below.
- tfds catalog sets ``imagenet2012``, ``imagenette``, ``cifar10``, ``cifar100``,
  ``mnist``, ``oxford_iiit_pet`` (segmentation), optionally with a config
  (``imagenette/320px-v2``); kwarg ``data_dir``. Read without TensorFlow from
  prepared ``array_record`` files: ``jaxcnn.data.tfds_sources``.
- ``voc2012`` (segmentation; kwarg ``data_dir`` = ``VOCdevkit/VOC2012``):
  ``jaxcnn.data.folders.voc`` (tfds has no VOC segmentation masks).
- ``folder:<path>``: ``ImageFolder`` of ``<path>/train`` and ``<path>/val`` (or
  ``<path>/test``) with the training folder's classes; kwargs ``strict``, ``verify``.

``size`` is accepted by every name (the training loop always passes it) and
only ``digits`` uses it; any other unknown kwarg is a one-line error.

``digits`` is scikit-learn's 1,797 handwritten digits (8x8, shipped inside the
package, so it works offline): upsampled to ``size`` x ``size`` and repeated
to three channels, split 80/20 into train/test by a fixed stratified
permutation.
"""

from __future__ import annotations

import functools
import inspect
import os

import numpy as np
from PIL import Image

from jaxcnn.data.folders import ImageFolder, voc
from jaxcnn.data.tfds_sources import TFDS_DATASETS, TfdsSource
from jaxcnn.data.transforms import reads_encoded


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


def _tfds(name: str):
    def make(split: str, *, data_dir: str | None = None) -> TfdsSource:
        return TfdsSource(name, split, data_dir=data_dir)
    make.__doc__ = f"tfds ``{name}`` read from ``data_dir`` (default: tfds's data dir)."
    return make


def voc2012(split: str, *, data_dir: str | None = None, strict: bool = False, verify: bool = True):
    """Pascal VOC 2012 segmentation from ``data_dir`` = ``VOCdevkit/VOC2012``."""
    if data_dir is None:
        raise ValueError("voc2012: pass data_dir=<...>/VOCdevkit/VOC2012 (from VOCtrainval_11-May-2012.tar)")
    return voc(data_dir, split, strict=strict, verify=verify)


def image_folder(path: str, split: str, *, strict: bool = False, verify: bool = True) -> ImageFolder:
    """``path/train`` for ``train``; ``path/val`` (or ``path/test``) for ``test``/``val``, with train's classes."""
    if split == "train":
        sub = "train"
    elif split in ("test", "val", "validation"):
        sub = next((s for s in ("val", "test") if os.path.isdir(os.path.join(path, s))), "val")
    else:
        raise ValueError(f"folder:{path}: unknown split {split!r}; valid: train, val, test")
    train_root = os.path.join(path, "train")
    classes = None
    if sub != "train" and os.path.isdir(train_root):
        classes = sorted(e.name for e in os.scandir(train_root) if e.is_dir() and not e.name.startswith("."))
    return ImageFolder(os.path.join(path, sub), classes=classes, strict=strict, verify=verify,
                       name=f"folder:{path}/{sub}")


def shapes(split: str, size: int = 32, num_examples: int | None = None):
    """Generated coloured shapes on textured backgrounds with per-pixel masks (``jaxcnn.data.shapes``)."""
    from jaxcnn.data.shapes import shapes as make
    return make(split, size=size, num_examples=num_examples)


SOURCES = {"digits": digits, "shapes": shapes, **{name: _tfds(name) for name in TFDS_DATASETS},
           "voc2012": voc2012}
FOLDER_PREFIX = "folder:"


def get_source(name: str, split: str, **kwargs):
    """The source ``name`` (see the module docstring for names and their kwargs), split ``split``."""
    if name.startswith(FOLDER_PREFIX):
        factory = functools.partial(image_folder, name[len(FOLDER_PREFIX):])
    elif name in SOURCES:
        factory = SOURCES[name]
    elif name.split("/")[0] in TFDS_DATASETS:  # a tfds config, e.g. imagenette/320px-v2
        factory = _tfds(name)
    else:
        hint = " (VOC segmentation is voc2012)" if name.startswith("voc") else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; valid: {', '.join(SOURCES)}, {FOLDER_PREFIX}<path>")
    valid = [p for p in inspect.signature(factory).parameters if p != "split"]
    if "size" not in valid:
        kwargs.pop("size", None)
    if unknown := sorted(set(kwargs) - set(valid)):
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return factory(split, **kwargs)


class _Encoded:
    """``source`` read through ``source.encoded``: examples with undecoded images."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.source.encoded(i)


def reader(source, transform):
    """``source``, or its encoded view when ``transform`` decodes images itself and ``source`` offers them
    (``jaxcnn.data.transforms.reads_encoded``; image folders and tfds sets have ``encoded``)."""
    if transform is not None and reads_encoded(transform) and hasattr(source, "encoded"):
        return _Encoded(source)
    return source


class TransformedSource:
    """``source`` with ``transform`` applied on read, its generator seeded by (``seed``, index).

    For evaluation (the loader's ``eval_batches`` reads sources as they are) and
    for looking at augmented examples; training passes its transform to the
    loader instead.
    """

    def __init__(self, source, transform, seed: int = 0):
        self.source, self.transform, self.seed = source, transform, seed
        self.num_classes, self.name = source.num_classes, source.name
        self._read = reader(source, transform)   # encoded images where the transform decodes them itself

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.transform(self._read[i], np.random.default_rng((self.seed, int(i))))
