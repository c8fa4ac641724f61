"""An ImageNet-format fixture made from real photos: every layout jaxcnn reads, a few hundred JPEGs, in seconds.

``build(root)`` (or ``jaxcnn fixture DIR``) cuts scikit-image's
sample photos (no download) into JPEGs of ImageNet's sizes (300-500 px on the longer side; random crops,
mirror images, brightness, JPEG quality) over six ImageNet classes (``CLASSES``: tabby, espresso, missile,
moped, tripod, wall clock; the tripod and the clock are grey photos, stored as greyscale JPEGs as some
ImageNet images are), and writes them as:

- ``tfds/``: a tfds data dir holding ``imagenet2012`` (train, validation), ``imagenet2012_real`` (validation:
  ReaL label sets of zero, one or two classes) and ``imagenet_v2`` (``matched-frequency``, test). Each is
  written by the catalog's own builder class (its features, its 1000 synset class names, its version,
  tfds's writer, shuffler and ``dataset_info.json``), subclassed only to yield these examples instead of
  reading the downloaded archives, in ``array_record`` format. Read with ``data_dir=root/tfds``, through the
  path that reads the real data sets (``jaxcnn.data.tfds_sources``).
- ``ILSVRC/train/<synset>/<synset>_<n>.JPEG`` and ``ILSVRC/val/<synset>/ILSVRC2012_val_<n>.JPEG``: the
  class-folder tree (all 1000 synset folders, so labels are ImageNet's indices and torchvision's weights
  score it); read as ``folder:root/ILSVRC``. The validation files carry the names of real validation
  images of the same class (tfds's ``validation_labels.txt``). As in the real archive, one training file
  is a CMYK JPEG and one a PNG named ``.JPEG`` (tfds's builder converts both; the tfds layout gets them
  as RGB JPEGs).
- ``ILSVRC-v2/val/<synset>/``: the ``imagenet_v2`` images as a folder tree (``folder:root/ILSVRC-v2``).
- ``VOCdevkit/VOC2012/``: ``JPEGImages``, ``SegmentationClass`` (palette PNGs), ``ImageSets/Segmentation``
  (train, val): objects cut from the cat, person and motorbike photos as ellipses and pasted onto crops of
  the other photos, the mask the object's VOC class inside, background outside, and a 255 (ignored) band
  along each outline as VOC draws it; read as ``voc2012`` with ``data_dir=root/VOCdevkit/VOC2012``.
- ``fixture.json``: what was written and the names that read it.

The ``imagenet_v2`` images are cut harder than the validation images (smaller crops, some blur, lower JPEG
quality), so that a model loses accuracy on them as models do on ImageNetV2. Everything is drawn from
generators seeded by ``seed``: the same call writes the same images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclasses.dataclass(frozen=True)
class FixtureClass:
    """An ImageNet class of the fixture: its synset, the scikit-image photos of it, and the synset that its
    ReaL label sets add for some validation images (a class that also fits the picture)."""

    synset: str
    photos: tuple[str, ...]
    also: str


CLASSES = (
    FixtureClass("n02123045", ("chelsea",), "n02123159"),                   # tabby; also tiger cat
    FixtureClass("n07920052", ("coffee",), "n07930864"),                    # espresso; also cup
    FixtureClass("n03773504", ("rocket",), "n04008634"),                    # missile; also projectile
    FixtureClass("n03785016", ("motorcycle_left", "motorcycle_right"), "n03791053"),  # moped; also motor scooter
    FixtureClass("n04485082", ("camera",), "n04069434"),                    # tripod; also reflex camera
    FixtureClass("n04548280", ("clock",), "n02708093"),                     # wall clock; also analog clock
)
# VOC: (photo, class index in jaxcnn.data.folders.VOC_CLASSES, the object's box in the photo: top, left, h, w)
VOC_OBJECTS = (("chelsea", 8, (20, 90, 280, 270)), ("astronaut", 15, (10, 120, 500, 330)),
               ("motorcycle_left", 14, (60, 60, 420, 620)))
VOC_BACKGROUNDS = ("coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass")
V2_CONFIG = "matched-frequency"


def _photo(name: str) -> np.ndarray:
    from skimage import data
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


def synsets() -> list[str]:
    """ImageNet-1k's 1000 synsets in label order (sorted; torchvision's order), from tfds's class list."""
    import tensorflow_datasets as tfds
    return tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()


def _validation_synsets() -> list[str]:
    import tensorflow_datasets as tfds
    return tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()


# -- one picture ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cut:
    """How a picture is cut from a photo: crop area fraction range, longer side range (px), JPEG quality range,
    blur radius range."""

    area: tuple[float, float]
    side: tuple[int, int] = (300, 500)
    quality: tuple[int, int] = (80, 95)
    blur: tuple[float, float] = (0.0, 0.0)


TRAIN_CUT = Cut(area=(0.3, 1.0))
VAL_CUT = Cut(area=(0.4, 1.0))
V2_CUT = Cut(area=(0.2, 0.6), quality=(55, 80), blur=(0.3, 1.2))


def _picture(photo: np.ndarray, cut: Cut, rng: np.random.Generator) -> Image.Image:
    """A random crop of ``photo`` (area in ``cut.area``, aspect ratio in [3/4, 4/3]), mirrored half the time,
    resized to a longer side in ``cut.side``, its brightness scaled by up to 15%, blurred in ``cut.blur``."""
    h, w = photo.shape[:2]
    area = rng.uniform(*cut.area) * h * w
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[top:top + ch, left:left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.clip(crop.astype(np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
    side = int(rng.integers(cut.side[0], cut.side[1] + 1))
    scale = side / max(ch, cw)
    im = Image.fromarray(np.ascontiguousarray(crop)).resize((max(1, round(cw * scale)), max(1, round(ch * scale))),
                                                            Image.BICUBIC)
    radius = rng.uniform(*cut.blur)
    return im.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.05 else im


def _jpeg(im: Image.Image, quality: int, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (im.convert(mode) if mode else im).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@dataclasses.dataclass
class Example:
    """One written picture: its file name, class (index into ``CLASSES``), encoded bytes (and the RGB JPEG
    tfds's builder would store instead, for the CMYK and PNG files) and, for validation, its ReaL labels."""

    file_name: str
    cls: int
    data: bytes
    tfds_data: bytes | None = None
    real: tuple[str, ...] = ()


def _pictures(split: str, per_class: int, seed: int, photos: dict[str, np.ndarray],
              val_names: dict[str, list[int]]) -> list[Example]:
    cut = {"train": TRAIN_CUT, "val": VAL_CUT, "v2": V2_CUT}[split]
    out = []
    for c, fc in enumerate(CLASSES):
        for i in range(per_class):
            rng = np.random.default_rng((seed, ("train", "val", "v2").index(split), c, i))
            photo = photos[fc.photos[i % len(fc.photos)]]
            im = _picture(photo, cut, rng)
            quality = int(rng.integers(cut.quality[0], cut.quality[1] + 1))
            data = _jpeg(im, quality)
            ex = Example("", c, data)
            if split == "train":
                ex.file_name = f"{fc.synset}_{i + 1}.JPEG"
                if (c, i) == (0, 0):      # ILSVRC's CMYK JPEGs; tfds's builder converts them to RGB
                    ex.data, ex.tfds_data = _jpeg(im, quality, "CMYK"), data
                elif (c, i) == (1, 0):    # ILSVRC's PNG named .JPEG; tfds's builder re-encodes it as JPEG
                    ex.data, ex.tfds_data = _png(im), data
            elif split == "val":
                ex.file_name = f"ILSVRC2012_val_{val_names[fc.synset][i] + 1:08d}.JPEG"
                # ReaL: no label (nothing of the class recognisable), two, the other class only, or the original
                kind = i % 4
                ex.real = ((), (fc.synset, fc.also), (fc.also,), (fc.synset,))[kind]
            else:
                ex.file_name = f"{i}.jpeg"
            out.append(ex)
    return out


# -- layouts -------------------------------------------------------------------------------------------------------

def _write_tree(root: Path, examples: list[Example], all_synsets: list[str]) -> None:
    for s in all_synsets:
        (root / s).mkdir(parents=True, exist_ok=True)
    for ex in examples:
        (root / CLASSES[ex.cls].synset / ex.file_name).write_bytes(ex.data)


def _tfds_builder(name: str, splits: dict[str, list[dict]], data_dir: Path, config: str | None = None) -> None:
    """Prepares catalog data set ``name`` in ``data_dir`` with its own builder class, yielding ``splits``."""
    import tensorflow_datasets as tfds

    real = tfds.builder_cls(name)
    with tfds.core.registered.skip_registration():
        class Fixture(real):
            # a module tfds cannot import: it then looks for no checksums or metadata files beside it
            __module__ = "jaxcnn_fixture"

            def _split_generators(self, dl_manager):
                return {split: self._records(records) for split, records in splits.items()}

            def _records(self, records):
                for r in records:
                    yield r["file_name"], r
    Fixture.name = name
    no_stats = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        Fixture(data_dir=str(data_dir), config=config, file_format="array_record").download_and_prepare(
            download_config=no_stats)


def _write_tfds(data_dir: Path, train: list[Example], val: list[Example], v2: list[Example]) -> None:
    import tensorflow_datasets as tfds

    was = tfds.core.utils.tqdm_utils._active
    tfds.disable_progress_bar()
    try:
        def record(ex, **labels):
            return {"file_name": ex.file_name, "image": ex.tfds_data or ex.data, **labels}
        syn = lambda ex: CLASSES[ex.cls].synset
        _tfds_builder("imagenet2012", {"train": [record(e, label=syn(e)) for e in train],
                                       "validation": [record(e, label=syn(e)) for e in val]}, data_dir)
        _tfds_builder("imagenet2012_real", {"validation": [record(e, original_label=syn(e), real_label=list(e.real))
                                                           for e in val]}, data_dir)
        labels = {s: i for i, s in enumerate(synsets())}
        v2_records = [{**record(e, label=labels[syn(e)]), "file_name": f"{labels[syn(e)]}/{e.file_name}"}
                      for e in v2]
        _tfds_builder("imagenet_v2", {"test": v2_records}, data_dir, config=V2_CONFIG)
    finally:
        tfds.display_progress_bar(was)


def _ellipse_mask(h: int, w: int, box: tuple[int, int, int, int], cls: int, border: int = 3) -> np.ndarray:
    """(h, w) uint8: ``cls`` inside the ellipse in ``box`` (top, left, bottom, right), 0 outside, 255 on a band of
    ``border`` px along its outline (VOC's void pixels)."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    t, left, b, r = box
    draw.ellipse((left, t, r, b), fill=255)
    draw.ellipse((left + border, t + border, r - border, b - border), fill=cls)
    return np.asarray(mask)


def _write_voc(root: Path, per_split: dict[str, int], seed: int, photos: dict[str, np.ndarray]) -> dict[str, int]:
    images, masks, lists = root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    for d in (images, masks, lists):
        d.mkdir(parents=True, exist_ok=True)
    palette = _voc_palette()
    counts = {}
    n = 0
    for split, count in per_split.items():
        stems = []
        for k in range(count):
            rng = np.random.default_rng((seed, 3, ("train", "val").index(split), k))
            back = _picture(photos[VOC_BACKGROUNDS[n % len(VOC_BACKGROUNDS)]], VAL_CUT, rng).convert("RGB")
            w, h = back.size
            canvas = np.array(back)
            label = np.zeros((h, w), np.uint8)
            name, cls, (bt, bl, bh, bw) = VOC_OBJECTS[n % len(VOC_OBJECTS)]
            obj = photos[name][bt:bt + bh, bl:bl + bw]
            scale = rng.uniform(0.45, 0.8) * min(h / bh, w / bw)
            oh, ow = max(8, round(bh * scale)), max(8, round(bw * scale))
            obj = np.asarray(Image.fromarray(obj).resize((ow, oh), Image.BILINEAR))
            top, left = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            m = _ellipse_mask(h, w, (top, left, top + oh - 1, left + ow - 1), cls)
            inside = m > 0
            canvas[top:top + oh, left:left + ow][inside[top:top + oh, left:left + ow]] = \
                obj[inside[top:top + oh, left:left + ow]]
            label[inside] = m[inside]
            stem = f"2012_{n:06d}"
            Image.fromarray(canvas).save(images / f"{stem}.jpg", "JPEG", quality=90)
            png = Image.fromarray(label, "P")
            png.putpalette(palette.reshape(-1).tolist())
            png.save(masks / f"{stem}.png")
            stems.append(stem)
            n += 1
        (lists / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        counts[split] = count
    return counts


def _voc_palette() -> np.ndarray:
    """VOC's colour map (256 x RGB): class index bits spread over the high bits of R, G and B; 255 is cream."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


# -- the whole fixture ---------------------------------------------------------------------------------------------

def build(root: str | os.PathLike, *, train_per_class: int = 40, val_per_class: int = 12, v2_per_class: int = 12,
          voc: tuple[int, int] = (12, 6), seed: int = 0, tfds: bool = True) -> dict:
    """Writes the fixture under ``root`` (see the module docstring) and returns its manifest (also written as
    ``root/fixture.json``): the class table, the counts, and the data set names and data dirs that read it.
    ``tfds=False`` leaves out the tfds layout (no tfds data set is built)."""
    for name, n in (("train_per_class", train_per_class), ("val_per_class", val_per_class),
                    ("v2_per_class", v2_per_class)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    if voc[0] < 1 or voc[1] < 1:
        raise ValueError(f"voc needs at least one train and one val image, got {voc}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = {n for fc in CLASSES for n in fc.photos} | {n for n, *_ in VOC_OBJECTS} | set(VOC_BACKGROUNDS)
    photos = {n: _photo(n) for n in sorted(names)}
    all_synsets = synsets()
    val_synsets = _validation_synsets()
    val_names = {fc.synset: [k for k, s in enumerate(val_synsets) if s == fc.synset] for fc in CLASSES}
    if val_per_class > min(len(v) for v in val_names.values()):
        raise ValueError(f"val_per_class must be <= {min(len(v) for v in val_names.values())} (ImageNet's "
                         "validation images per class)")
    train = _pictures("train", train_per_class, seed, photos, val_names)
    val = _pictures("val", val_per_class, seed, photos, val_names)
    v2 = _pictures("v2", v2_per_class, seed, photos, val_names)
    _write_tree(root / "ILSVRC" / "train", train, all_synsets)
    _write_tree(root / "ILSVRC" / "val", val, all_synsets)
    _write_tree(root / "ILSVRC-v2" / "val", v2, all_synsets)
    if tfds:
        _write_tfds(root / "tfds", train, val, v2)
    voc_counts = _write_voc(root / "VOCdevkit" / "VOC2012", {"train": voc[0], "val": voc[1]}, seed, photos)
    from jaxcnn.imagenet import class_names
    manifest = {
        "classes": [{"synset": fc.synset, "label": all_synsets.index(fc.synset),
                     "name": class_names()[all_synsets.index(fc.synset)]} for fc in CLASSES],
        "images": {"train": len(train), "val": len(val), "v2": len(v2), "voc": voc_counts},
        "datasets": {
            "tfds data_dir": str(root / "tfds") if tfds else None,
            "tfds": ["imagenet2012 (train, validation)", "imagenet2012_real (validation)",
                     f"imagenet_v2/{V2_CONFIG} (test)"] if tfds else [],
            "folders": [f"folder:{root / 'ILSVRC'}", f"folder:{root / 'ILSVRC-v2'}"],
            "voc2012 data_dir": str(root / "VOCdevkit" / "VOC2012"),
        },
    }
    (root / "fixture.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
