"""The loader on the fixture's JPEGs: the same batches from threads and worker processes, encoded images decoded
by the transforms (pixel for pixel a full decode without the JPEG draft, close to it with), corrupt files in a
worker process, and the ``data_workers`` setting."""

import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import loader
from jaxcnn.data.image_io import decode_resized_crop, draft_scale
from jaxcnn.data.sources import TransformedSource, get_source
from jaxcnn.data.transforms import make_eval_transform, make_train_transform, random_resized_crop, \
    random_resized_crop_params
from jaxcnn.training import TrainConfig
from jaxcnn.training.workdir import config_dict, differences


@pytest.fixture(scope="module")
def folder(imagenet_fixture):
    root, _ = imagenet_fixture
    return get_source(f"folder:{root / 'ILSVRC'}", "train"), root


def _copy(batches):
    return [{k: np.array(v) for k, v in b.items()} for b in batches]   # out of the workers' shared memory


def test_one_thread_two_threads_and_two_processes_give_the_same_batches(folder):
    src, root = folder
    augment = make_train_transform("inception", 32)   # 300-500 px JPEGs to 32 px: most crops decode drafted
    kw = dict(global_batch=8, seed=5, augment=augment)
    one = _copy(loader.train_batches(src, start_step=1, num_steps=3, threads=1, **kw))
    two = _copy(loader.train_batches(src, start_step=1, num_steps=3, threads=2, **kw))
    procs = _copy(loader.train_batches(src, start_step=1, num_steps=3, workers=2, **kw))
    resumed = _copy(loader.train_batches(src, start_step=0, num_steps=4, threads=2, **kw))[1:]
    for other in (two, procs, resumed):
        assert len(other) == 3
        for a, b in zip(one, other):
            assert a.keys() == b.keys() == {"image", "label"}
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])
    assert one[0]["image"].shape == (8, 32, 32, 3) and len({int(y) for b in one for y in b["label"]}) > 1
    # evaluation batches of a tfds set (its undecoded JPEGs through the centre crop) in worker processes
    val = TransformedSource(get_source("imagenet2012", "test", data_dir=str(root / "tfds")),
                            make_eval_transform(32, "center"))
    threads = _copy(loader.eval_batches(val, global_batch=16, threads=2))
    procs = _copy(loader.eval_batches(val, global_batch=16, workers=2))
    assert [b["mask"].sum() for b in threads] == [16, 8]
    for a, b in zip(threads, procs, strict=True):
        for k in ("image", "label", "mask"):
            np.testing.assert_array_equal(a[k], b[k])


def test_encoded_images_without_the_draft_are_decoded_pixel_for_pixel(folder):
    """The crop, the eval resize and torchvision's eval transform on undecoded files equal the same transforms
    on the decoded arrays, for RGB, grey, CMYK and PNG-named-JPEG files alike."""
    from jaxcnn.training.evaluation import torchvision_center

    src, _ = folder
    crop = random_resized_crop(48, draft=False)
    center, tv = make_eval_transform(40, "center"), torchvision_center(40, 44)
    modes = set()
    for i in range(0, len(src), 3):
        enc, arr = src.encoded(i), src[i]
        modes.add(Image.open(src.files[i]).mode)
        a = crop(arr, np.random.default_rng(i))["image"]
        b = crop(enc, np.random.default_rng(i))["image"]
        np.testing.assert_array_equal(a, b, err_msg=str(src.files[i]))
        np.testing.assert_array_equal(center(arr, None)["image"], center(enc, None)["image"])
        np.testing.assert_array_equal(tv(arr)["image"], tv(enc)["image"])
    assert modes == {"RGB", "L", "CMYK"}


def test_simplejpeg_decodes_the_pixels_pillow_decodes(folder, monkeypatch):
    """The fast JPEG decoder gives Pillow's pixels, in full and at each reduced scale, for every file of the
    fixture (RGB and greyscale JPEGs through simplejpeg; CMYK and PNG through Pillow either way)."""
    from jaxcnn.data import image_io

    src, _ = folder
    assert image_io.FAST_JPEG                     # a dependency: the loader's speed relies on it
    blobs = [src.encoded(i)["image"].data for i in range(0, len(src), 2)]
    fast = [[image_io._pixels(b, s) for s in (1, 2, 4)] for b in blobs]
    monkeypatch.setattr(image_io, "FAST_JPEG", False)
    for b, mine in zip(blobs, fast):
        for s, (a, applied) in zip((1, 2, 4), mine):
            pillow, pillow_applied = image_io._pixels(b, s)
            np.testing.assert_array_equal(a, pillow)
            assert applied == pillow_applied == (s if b[:2] == b"\xff\xd8" else 1)   # a PNG is decoded in full


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_the_jpeg_draft_stays_close_to_a_full_decode(folder):
    """Crops at least twice the output are decoded at 1/2-1/8 scale: above 30 dB PSNR against the full decode's
    bilinear resize, and about as close as it to a Lanczos resize of the full-size crop (the quality the output
    should have); repeatable."""
    src, _ = folder
    size, rows = 64, []
    for i in range(len(src)):
        enc = src.encoded(i)["image"]
        h, w = enc.size()
        box = random_resized_crop_params(h, w, np.random.default_rng(i))
        if draft_scale(box[2:], (size, size)) == 1 or Image.open(src.files[i]).format != "JPEG":
            continue
        full = decode_resized_crop(enc, box, (size, size), Image.BILINEAR, draft=False)
        drafted = decode_resized_crop(enc, box, (size, size), Image.BILINEAR, draft=True)
        np.testing.assert_array_equal(drafted, decode_resized_crop(enc, box, (size, size), Image.BILINEAR))
        t, left, ch, cw = box
        best = np.asarray(Image.fromarray(enc.decode()[t:t + ch, left:left + cw]).resize((size, size), Image.LANCZOS))
        rows.append((_psnr(drafted, full), _psnr(full, best), _psnr(drafted, best), np.array_equal(drafted, full)))
    rows = np.array(rows)
    assert len(rows) >= len(src) // 2 and not rows[:, 3].any()     # drafted, and so not the full decode's pixels
    assert rows[:, 0].min() > 30.0
    assert np.median(rows[:, 2]) > np.median(rows[:, 1]) - 3.0


def test_corrupt_files_are_skipped_counted_refused_or_named_from_a_worker(folder, tmp_path):
    src, root = folder
    cls = root / "ILSVRC" / "train" / "n02123045"
    shutil.copytree(cls, tmp_path / "train" / cls.name)
    good = sorted((tmp_path / "train" / cls.name).iterdir())[1]
    (tmp_path / "train" / cls.name / "truncated.JPEG").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "train" / cls.name / "text.JPEG").write_bytes(b"not a picture")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        checked = get_source(f"folder:{tmp_path}", "train")
    assert len(checked) == 8 and len(checked.skipped) == 2
    with pytest.raises(ValueError, match=r"text\.JPEG: not a readable image \(not an image format Pillow knows\)"):
        get_source(f"folder:{tmp_path}", "train", strict=True)
    unchecked = get_source(f"folder:{tmp_path}", "train", verify=False)    # the bad files fail when decoded
    with pytest.raises(ValueError, match=r"(truncated|text)\.JPEG: not a readable image"):
        for _ in loader.train_batches(unchecked, global_batch=10, seed=0, augment=make_train_transform(
                "inception", 16), num_steps=2, workers=1):
            pass


def test_the_data_workers_setting(monkeypatch):
    monkeypatch.setattr(loader, "usable_cores", lambda: 16)
    assert (loader.default_workers(accelerator=True), loader.default_workers(accelerator=False)) == (14, 0)
    monkeypatch.setattr(loader, "usable_cores", lambda: 2)
    assert loader.default_workers(accelerator=True) == 0
    with pytest.raises(ValueError, match=r"data_workers must be an int >= 0 \(0: threads in this process\), got -1"):
        loader.check_workers(-1)
    cfg = TrainConfig().with_overrides(["data_workers=3"])
    assert cfg.data_workers == 3 and TrainConfig().data_workers is None
    # the batches do not depend on it, so a run resumes under another count
    assert differences(config_dict(cfg), config_dict(dataclasses.replace(cfg, data_workers=0))) == {}
