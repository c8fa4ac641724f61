"""Data sources: image folders, segmentation folders (VOC layout), tfds catalog sets read without TensorFlow."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data.folders import ImageFolder, SegmentationFolder
from jaxcnn.data.image_io import sample_photos
from jaxcnn.data.loader import eval_batches, train_batches
from jaxcnn.data.sources import TransformedSource, get_source
from jaxcnn.data.tfds_sources import TfdsSource
from jaxcnn.data.transforms import make_eval_transform, make_train_transform


@pytest.fixture(scope="module")
def photos():
    """scikit-image's sample photos shrunk to about 30x40 uint8."""
    out = []
    for im in sample_photos().values():
        im = Image.fromarray(np.asarray(np.rint(im * 255), np.uint8))
        out.append(np.asarray(im.resize((40, round(40 * im.height / im.width)), Image.BILINEAR)))
    return out


def _jpeg_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# -- ImageFolder -----------------------------------------------------------------------------------------------

def _write_classes(root, photos):
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "nested").mkdir(parents=True)
    Image.fromarray(photos[0]).save(root / "cat" / "a.png")
    Image.fromarray(photos[1]).save(root / "cat" / "b.JPG", quality=95)
    Image.fromarray(photos[2]).save(root / "dog" / "nested" / "c.png")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_image_folder_reads_what_was_written(tmp_path, photos):
    _write_classes(tmp_path, photos)
    src = ImageFolder(tmp_path)
    assert src.classes == ["cat", "dog"] and src.num_classes == 2 and len(src) == 3 and not src.skipped
    examples = [src[i] for i in range(3)]
    assert [int(e["label"]) for e in examples] == [0, 0, 1]
    assert all(e["image"].dtype == np.uint8 and e["label"].dtype == np.int32 for e in examples)
    np.testing.assert_array_equal(examples[0]["image"], photos[0])  # PNG: exact
    np.testing.assert_array_equal(examples[2]["image"], photos[2])
    with Image.open(tmp_path / "cat" / "b.JPG") as im:  # JPEG: Pillow's own decode of the file
        np.testing.assert_array_equal(examples[1]["image"], np.asarray(im.convert("RGB")))


def test_image_folder_skips_and_counts_corrupt_files_or_refuses_them(tmp_path, photos):
    _write_classes(tmp_path, photos)
    good = _jpeg_bytes(photos[0])
    (tmp_path / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / "garbage.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        src = ImageFolder(tmp_path)
    assert len(src) == 3 and len(src.skipped) == 2
    assert {p.rsplit("/", 1)[-1] for p, _ in src.skipped} == {"truncated.jpg", "garbage.png"}
    with pytest.raises(ValueError, match=r"truncated\.jpg"):
        ImageFolder(tmp_path, strict=True)


def test_image_folder_read_time_failure_names_the_file(tmp_path, photos):
    _write_classes(tmp_path, photos)
    src = ImageFolder(tmp_path, verify=False)
    (tmp_path / "cat" / "a.png").write_bytes(b"gone bad")
    with pytest.raises(ValueError, match=r"a\.png: not a readable image"):
        src[0]


def test_empty_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "x.txt").write_text("")
    with pytest.raises(ValueError, match="no readable"):
        ImageFolder(tmp_path)


def test_folder_dataset_through_get_source(tmp_path, photos):
    _write_classes(tmp_path / "train", photos)
    (tmp_path / "val" / "dog").mkdir(parents=True)
    Image.fromarray(photos[1]).save(tmp_path / "val" / "dog" / "v.png")
    train = get_source(f"folder:{tmp_path}", "train", size=32)  # size: accepted, unused
    test = get_source(f"folder:{tmp_path}", "test")
    assert train.classes == test.classes == ["cat", "dog"]  # val has only dog, keeps train's labels
    assert len(test) == 1 and int(test[0]["label"]) == 1
    with pytest.raises(ValueError, match="unknown option.*strict, verify"):
        get_source(f"folder:{tmp_path}", "train", shuffle=True)
    fixed = TransformedSource(test, make_eval_transform(16))
    assert fixed[0]["image"].shape == (16, 16, 3)


def test_folder_of_mixed_sizes_batches_through_the_loader(tmp_path, photos):
    """Images of different sizes become one batch shape through a training transform, the same for the same seed."""
    _write_classes(tmp_path, photos)
    src = ImageFolder(tmp_path)
    assert len({src[i]["image"].shape for i in range(3)}) > 1
    augment = make_train_transform("inception", 16)
    first, again = (next(train_batches(src, global_batch=4, seed=1, augment=augment, num_steps=1)) for _ in range(2))
    assert first["image"].shape == (4, 16, 16, 3) and first["label"].dtype == np.int32
    np.testing.assert_array_equal(first["image"], again["image"])
    batch = next(eval_batches(TransformedSource(src, make_eval_transform(16)), global_batch=4))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["mask"].tolist() == [1, 1, 1, 0]


# -- SegmentationFolder / VOC ----------------------------------------------------------------------------------

def _palette_png(path, mask):
    im = Image.fromarray(mask, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    im.save(path)


def _write_voc(root, photos, num=3):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    masks = {}
    for i in range(num):
        image = photos[i % len(photos)]
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[5:15, 5:20] = 1 + i % 2
        mask[15, :] = 255
        Image.fromarray(image).save(root / "JPEGImages" / f"2007_{i:06d}.jpg")
        _palette_png(root / "SegmentationClass" / f"2007_{i:06d}.png", mask)
        masks[f"2007_{i:06d}"] = mask
    Image.fromarray(photos[0]).save(root / "JPEGImages" / "2008_without_mask.jpg")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000000\n2007_000001\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")
    return masks


def test_segmentation_folder_reads_pairs_by_stem(tmp_path, photos):
    masks = _write_voc(tmp_path, photos)
    src = SegmentationFolder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", num_classes=3)
    assert len(src) == 3 and src.num_classes == 3  # the image without a mask is not an example
    ex = src[1]
    assert ex["image"].shape == photos[1].shape and ex["image"].dtype == np.uint8
    assert ex["mask"].dtype == np.uint8
    np.testing.assert_array_equal(ex["mask"], masks["2007_000001"])  # palette indices, 255 kept


def test_voc_layout_through_get_source(tmp_path, photos):
    masks = _write_voc(tmp_path, photos)
    train = get_source("voc2012", "train", data_dir=str(tmp_path), size=224)
    test = get_source("voc2012", "test", data_dir=str(tmp_path))
    assert (len(train), len(test), train.num_classes, train.classes[15]) == (2, 1, 21, "person")
    np.testing.assert_array_equal(test[0]["mask"], masks["2007_000002"])
    with pytest.raises(ValueError, match="data_dir"):
        get_source("voc2012", "train")
    with pytest.raises(ValueError, match="voc2012"):
        get_source("voc/2012", "train")


def test_segmentation_folder_refuses_bad_masks_naming_the_file(tmp_path, photos):
    _write_voc(tmp_path, photos)
    images, masks = tmp_path / "JPEGImages", tmp_path / "SegmentationClass"
    with pytest.raises(ValueError, match=r"2007_000001\.png: mask values \[2\]"):
        SegmentationFolder(images, masks, num_classes=2)
    SegmentationFolder(images, masks, num_classes=3)  # 255 is the ignore label
    with pytest.raises(ValueError, match=r"2007_000000\.png: mask values \[255\]"):
        SegmentationFolder(images, masks, num_classes=3, ignore_label=0)
    _palette_png(masks / "2007_000002.png", np.zeros((7, 9), np.uint8))
    with pytest.raises(ValueError, match=r"2007_000002\.png: mask is 7x9 but its image is"):
        SegmentationFolder(images, masks, num_classes=3)
    lazy = SegmentationFolder(images, masks, num_classes=3, verify=False)  # caught on read instead
    with pytest.raises(ValueError, match=r"2007_000002\.png: mask is 7x9"):
        lazy[2]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(masks / "2007_000002.png")
    with pytest.raises(ValueError, match=r"2007_000002\.png: mask must be a palette or greyscale"):
        SegmentationFolder(images, masks, num_classes=3)


def test_segmentation_folder_skips_corrupt_pairs(tmp_path, photos):
    _write_voc(tmp_path, photos)
    (tmp_path / "JPEGImages" / "2007_000001.jpg").write_bytes(_jpeg_bytes(photos[1])[:300])
    with pytest.warns(UserWarning, match="skipped 1"):
        src = SegmentationFolder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", num_classes=3)
    assert len(src) == 2 and "2007_000001.jpg" in src.skipped[0][0]
    with pytest.raises(ValueError, match=r"2007_000001\.jpg"):
        SegmentationFolder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", num_classes=3, strict=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable image/mask pairs"):
        SegmentationFolder(tmp_path / "JPEGImages", empty, num_classes=3)


# -- tfds catalog sets, built here in array_record format without TensorFlow -----------------------------------

def _build_tfds(data_dir, name, features, splits):
    """Prepares ``name`` (at the catalog's version) in ``data_dir`` from example dicts, as ``tfds build`` would."""
    import tensorflow_datasets as tfds

    version = tfds.builder_cls(name).VERSION  # outside skip_registration: this may import the catalog module
    with tfds.core.registered.skip_registration():  # reading goes through the real catalog builder
        class Tiny(tfds.core.GeneratorBasedBuilder):
            __module__ = "tiny_tfds"  # not importable: tfds then looks for no checksums file beside it
            VERSION = version

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(exs) for split, exs in splits.items()}

            def _generate_examples(self, examples):
                yield from enumerate(examples)
    Tiny.name = name
    no_stats = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    Tiny(data_dir=str(data_dir), file_format="array_record").download_and_prepare(download_config=no_stats)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, photos):
    """A tfds data dir with tiny cifar10, mnist, imagenet2012 and oxford_iiit_pet; returns (dir, written examples)."""
    import tensorflow_datasets as tfds
    data_dir = tmp_path_factory.mktemp("tfds")
    g = np.random.default_rng(0)
    written = {}
    cifar = [{"id": f"{i}", "image": g.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": i % 10}
             for i in range(5)]
    written["cifar10"] = cifar
    _build_tfds(data_dir, "cifar10", {"id": tfds.features.Text(), "image": tfds.features.Image(shape=(32, 32, 3)),
                                      "label": tfds.features.ClassLabel(num_classes=10)},
                {"train": [{**e, "image": _png_bytes(e["image"])} for e in cifar[:3]],
                 "test": [{**e, "image": _png_bytes(e["image"])} for e in cifar[3:]]})
    digits = [g.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(2)]
    written["mnist"] = digits
    _build_tfds(data_dir, "mnist", {"image": tfds.features.Image(shape=(28, 28, 1)),
                                    "label": tfds.features.ClassLabel(num_classes=10)},
                {"train": [{"image": _png_bytes(d), "label": 7} for d in digits]})
    _build_tfds(data_dir, "imagenet2012", {"image": tfds.features.Image(encoding_format="jpeg"),
                                           "label": tfds.features.ClassLabel(num_classes=1000)},
                {"train": [{"image": _jpeg_bytes(photos[0]), "label": 281}],
                 "validation": [{"image": _png_bytes(photos[1]), "label": 999}]})
    trimaps = [g.integers(1, 4, p.shape[:2], dtype=np.uint8) for p in photos[:2]]
    written["oxford_iiit_pet"] = list(zip(photos[:2], trimaps))
    pets = [{"image": _png_bytes(p), "label": i, "segmentation_mask": _png_bytes(t)}
            for i, (p, t) in enumerate(zip(photos, trimaps))]
    _build_tfds(data_dir, "oxford_iiit_pet", {"image": tfds.features.Image(encoding_format="jpeg"),
                                              "label": tfds.features.ClassLabel(num_classes=37),
                                              "segmentation_mask": tfds.features.Image(shape=(None, None, 1))},
                {"train": pets, "test": pets[:1]})
    return str(data_dir), written


def test_tfds_classification_round_trip_without_tensorflow(tfds_dir):
    data_dir, written = tfds_dir
    train = get_source("cifar10", "train", data_dir=data_dir, size=32)
    test = get_source("cifar10", "test", data_dir=data_dir)
    assert (len(train), len(test), train.num_classes, train.name) == (3, 2, 10, "cifar10/train")
    got = {int(train[i]["label"]): train[i]["image"] for i in range(3)}  # tfds shuffles the stored order
    for e in written["cifar10"][:3]:
        np.testing.assert_array_equal(got[e["label"]], e["image"])
    assert train[0]["image"].dtype == np.uint8 and train[0]["label"].dtype == np.int32
    mnist = get_source("mnist", "train", data_dir=data_dir)
    ex = mnist[0]
    assert ex["image"].shape == (28, 28, 3) and int(ex["label"]) == 7
    assert any(np.array_equal(ex["image"], np.repeat(d[..., None], 3, -1)) for d in written["mnist"])
    with pytest.raises(ValueError, match="mnist in .* has no 'test' split; it has train"):
        get_source("mnist", "test", data_dir=data_dir)
    with pytest.raises(ValueError, match="mnist/train: the split is empty"):
        TfdsSource("mnist", "train", data_source=[], num_classes=10)
    imagenet = get_source("imagenet2012", "test", data_dir=data_dir)  # test reads validation
    assert (len(imagenet), imagenet.num_classes, int(imagenet[0]["label"])) == (1, 1000, 999)
    assert "tensorflow" not in sys.modules


def test_tfds_pets_masks_map_the_trimap(tfds_dir):
    data_dir, written = tfds_dir
    pets = get_source("oxford_iiit_pet", "train", data_dir=data_dir)
    assert len(pets) == 2 and pets.num_classes == 2
    expected = [(photo, np.select([trimap == 1, trimap == 2], [1, 0], 255))
                for photo, trimap in written["oxford_iiit_pet"]]
    for i in range(2):  # tfds stores examples shuffled: find each one's written pair by its mask
        ex = pets[i]
        assert set(ex) == {"image", "mask"} and ex["mask"].dtype == np.uint8
        photo, mask = next((p, m) for p, m in expected if m.shape == ex["mask"].shape and (m == ex["mask"]).all())
        np.testing.assert_array_equal(ex["image"], photo)


def test_tfds_missing_data_says_how_to_prepare_it(tmp_path, tfds_dir):
    with pytest.raises(ValueError, match=r"cifar100 is not prepared in .*tfds build cifar100 --data_dir .* "
                                         r"--file_format=array_record"):
        get_source("cifar100", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"):
        get_source("imagenet2012", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'dev'; valid: train, test"):
        get_source("cifar10", "dev", data_dir=tfds_dir[0])
    with pytest.raises(ValueError, match="unknown option.*; valid: data_dir"):
        get_source("cifar10", "train", data_dir=tfds_dir[0], shuffle_files=True)


def test_tfds_source_decodes_encoded_bytes(photos):
    """Records with encoded images and masks (tfds ``SkipDecoding``) are decoded with Pillow."""
    trimap = np.full(photos[0].shape[:2], 2, np.uint8)
    trimap[:4] = 3
    records = [{"image": _png_bytes(photos[0]), "label": 1, "segmentation_mask": _png_bytes(trimap)}]
    pets = TfdsSource("oxford_iiit_pet", "train", data_source=records)
    np.testing.assert_array_equal(pets[0]["image"], photos[0])
    assert (pets[0]["mask"][:4] == 255).all() and (pets[0]["mask"][4:] == 0).all()
    cifar = TfdsSource("cifar10", "train", data_source=[{"image": b"broken", "label": 1}], num_classes=10)
    with pytest.raises(ValueError, match=r"cifar10/train\[0\] image: not a readable image"):
        cifar[0]


def test_unknown_dataset_lists_the_valid_names():
    valid = "valid: digits, shapes, imagenet2012, .*oxford_iiit_pet, voc2012, folder:<path>"
    with pytest.raises(ValueError, match=valid):
        get_source("imagenet", "train")
