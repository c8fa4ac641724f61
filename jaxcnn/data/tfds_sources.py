"""TensorFlow Datasets catalog data sets as random-access sources, read without TensorFlow.

``TfdsSource(name, split, data_dir)`` wraps ``tfds`` random-access data sources
(``builder.as_data_source``), which read ``array_record`` (or parquet) files
with NumPy decoding, so TensorFlow is not needed to train. The data set must
already be prepared in that format (``tfds build <name> --data_dir <dir>
--file_format=array_record``; building some data sets needs TensorFlow, reading
never does). Nothing is downloaded here: a missing data set is a one-line error
saying how to prepare it.

Examples are ``{"image": uint8 (H, W, 3), "label": int32}`` of the image's own
size (grey MNIST is repeated to three channels), or for ``oxford_iiit_pet``
``{"image", "mask": uint8 (H, W)}`` with the trimap mapped to classes
0 = background, 1 = pet, 255 = border (ignored). ``imagenet2012_real`` (ImageNet's
validation images with the ReaL label sets of Beyer et al. 2020) adds
``"real_labels"``: int32 (K,), K >= 0 (``REAL_LABELS``), its ``label`` the original
one. The image feature is read undecoded (tfds's ``SkipDecoding``) and decoded
here (``jaxcnn.data.image_io``), so that ``src.encoded(i)`` can hand the JPEG to a transform that
decodes only what it needs (``jaxcnn.data.image_io.Encoded``); records of a
custom ``data_source`` may hold decoded pixels or encoded bytes.

Splits use the project's names: ``test`` reads ``validation`` where the data set
has no labelled test split (ImageNet, Imagenette). Pascal VOC segmentation is not
in the tfds catalog (``voc/2012`` carries boxes only): see ``jaxcnn.data.folders.voc``.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np

from jaxcnn.data.folders import read_mask
from jaxcnn.data.image_io import Encoded, to_rgb_uint8

REAL_LABELS = "real_labels"   # an example's ReaL label set, where the data set has one


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How one catalog data set becomes examples."""
    splits: dict[str, str]                 # project split -> tfds split
    mask_key: str | None = None            # segmentation: the tfds feature with the mask
    mask_lut: tuple[int, ...] | None = None  # stored mask value -> class (index = stored value)
    num_mask_classes: int | None = None
    manual: str | None = None              # files to place in <data_dir>/downloads/manual before building
    label_key: str = "label"               # the tfds feature with the class label
    real_key: str | None = None            # the tfds feature with the ReaL label set


_TRAIN_TEST = {"train": "train", "test": "test"}
_TRAIN_VAL = {"train": "train", "validation": "validation", "val": "validation", "test": "validation"}
_VAL_ONLY = {"validation": "validation", "val": "validation", "test": "validation"}

TFDS_DATASETS: dict[str, TfdsSpec] = {
    "imagenet2012": TfdsSpec(_TRAIN_VAL, manual="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"),
    "imagenet2012_real": TfdsSpec(_VAL_ONLY, manual="ILSVRC2012_img_val.tar", label_key="original_label",
                                  real_key="real_label"),
    "imagenet_v2": TfdsSpec({"test": "test"}),   # configs matched-frequency (default), threshold-0.7, topimages
    "imagenette": TfdsSpec(_TRAIN_VAL),
    "cifar10": TfdsSpec(_TRAIN_TEST),
    "cifar100": TfdsSpec(_TRAIN_TEST),
    "mnist": TfdsSpec(_TRAIN_TEST),
    # Trimap: 1 = pet, 2 = background, 3 = border -> 1, 0, 255 (ignored).
    "oxford_iiit_pet": TfdsSpec(_TRAIN_TEST, mask_key="segmentation_mask", mask_lut=(255, 1, 0, 255),
                                num_mask_classes=2),
}


def prepare_hint(name: str, data_dir: str) -> str:
    """The command that prepares ``name`` in ``data_dir`` for random access."""
    spec = TFDS_DATASETS[name.split("/")[0]]
    manual = f"place {spec.manual} in {data_dir}/downloads/manual, then " if spec.manual else ""
    return (f"{manual}run `tfds build {name} --data_dir {data_dir} --file_format=array_record` (or try the "
            "commands on `jaxcnn fixture DIR`, a small stand-in read with --data-dir DIR/tfds)")


def _default_data_dir() -> str:
    import tensorflow_datasets as tfds
    return os.fspath(tfds.core.constants.DATA_DIR)


class TfdsSource:
    """A prepared tfds data set split; ``name`` may carry a config (``imagenette/320px-v2``).

    ``data_source`` replaces the tfds reader with any sequence of tfds-style
    example dicts (its ``num_classes`` must then be given).
    """

    def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike | None = None,
                 data_source=None, num_classes: int | None = None):
        base = name.split("/")[0]
        if base not in TFDS_DATASETS:
            raise ValueError(f"unknown tfds data set {name!r}; valid: {', '.join(TFDS_DATASETS)}")
        self.spec = spec = TFDS_DATASETS[base]
        if split not in spec.splits:
            raise ValueError(f"{name}: unknown split {split!r}; valid: {', '.join(spec.splits)}")
        self.name = f"{name}/{split}"
        if data_source is None:
            data_source, num_classes = _open(name, spec.splits[split], data_dir)
        if spec.mask_key is not None:
            num_classes = spec.num_mask_classes
            self._lut = np.asarray(spec.mask_lut + (255,) * (256 - len(spec.mask_lut)), np.uint8)
        if num_classes is None:
            raise ValueError(f"{name}: num_classes must be given with a custom data_source")
        self.num_classes = num_classes
        self.ignore_label = 255
        self.data_source = data_source
        if len(data_source) == 0:
            raise ValueError(f"{self.name}: the split is empty")

    def __len__(self) -> int:
        return len(self.data_source)

    def _record(self, i: int) -> dict:
        try:
            return self.data_source[i]
        except (OSError, ValueError, SyntaxError) as e:  # tfds decoding a corrupt record
            raise ValueError(f"{self.name}[{i}]: unreadable record ({e})") from None

    def _labels(self, record: dict) -> dict[str, np.ndarray]:
        out = {"label": np.int32(record[self.spec.label_key])}
        if self.spec.real_key is not None:
            out[REAL_LABELS] = np.asarray(record[self.spec.real_key], np.int32).reshape(-1)
        return out

    def encoded(self, i: int) -> dict:
        """Example ``i`` of a classification set with its image undecoded (``Encoded``) where the record
        holds encoded bytes (decoded pixels otherwise)."""
        record = self._record(i)
        image = record["image"]
        if isinstance(image, (bytes, bytearray)) and self.spec.mask_key is None:
            return {"image": Encoded(bytes(image), f"{self.name}[{i}] image"), **self._labels(record)}
        return self._example(record, i)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self._example(self._record(i), i)

    def _example(self, record: dict, i: int) -> dict[str, np.ndarray]:
        where = f"{self.name}[{i}]"
        image = to_rgb_uint8(record["image"], f"{where} image")
        if self.spec.mask_key is None:
            return {"image": image, **self._labels(record)}
        raw = record[self.spec.mask_key]
        if isinstance(raw, (bytes, bytearray)):
            raw = read_mask(io.BytesIO(raw), name=f"{where} mask")
        raw = np.asarray(raw)
        raw = raw[..., 0] if raw.ndim == 3 else raw
        if raw.shape != image.shape[:2]:
            raise ValueError(f"{where}: mask {raw.shape} does not match image {image.shape[:2]}")
        return {"image": image, "mask": self._lut[raw]}


def _open(name: str, tfds_split: str, data_dir):
    """(random-access tfds data source, number of label classes); one-line errors when not prepared."""
    import tensorflow_datasets as tfds
    data_dir = os.fspath(data_dir) if data_dir is not None else _default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:  # e.g. an unknown config
        raise ValueError(f"{name}: {str(e).strip().splitlines()[0]}") from None
    if not builder.is_prepared():
        raise ValueError(f"{name} is not prepared in {data_dir}: {prepare_hint(name, data_dir)}")
    fmt = builder.info.file_format
    if fmt is None or fmt.value not in ("array_record", "parquet"):
        raise ValueError(f"{name} in {data_dir} is stored as {fmt.value if fmt else 'unknown'}, which has no random "
                         f"access: rebuild it in another data_dir: {prepare_hint(name, data_dir)}")
    if tfds_split not in builder.info.splits:
        raise ValueError(f"{name} in {data_dir} has no {tfds_split!r} split; it has {', '.join(builder.info.splits)}")
    features = builder.info.features
    key = TFDS_DATASETS[name.split("/")[0]].label_key
    label = features[key] if key in features else None
    # the image undecoded: decoded here (image_io: simplejpeg or Pillow), or by a transform that needs only part of it
    encoded = "image" in features and isinstance(features["image"], tfds.features.Image)
    skip = {"image": tfds.decode.SkipDecoding()} if encoded else None
    return builder.as_data_source(split=tfds_split, decoders=skip), getattr(label, "num_classes", None)
