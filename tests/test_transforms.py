"""Transforms: determinism, shapes, exact geometry against Pillow, image/mask alignment, PCA lighting."""

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import transforms as T
from jaxcnn.data.augment import make_augment
from jaxcnn.data.image_io import sample_photos


@pytest.fixture(scope="module")
def photo():
    """scikit-image's cat, shrunk to 60x90 uint8 (a real photo, small enough to be fast)."""
    cat = np.asarray(np.rint(sample_photos()["chelsea"] * 255), np.uint8)
    return np.asarray(Image.fromarray(cat).resize((90, 60), Image.BILINEAR))


def rng(seed):
    return np.random.default_rng(seed)


TRAIN_CASES = [("inception", {}), ("inception", {"lighting_std": 0.1}), ("alexnet", {"resize": 40}),
               ("vgg_scale", {"min_size": 36, "max_size": 64})]


@pytest.mark.parametrize("policy,opts", TRAIN_CASES)
def test_train_policies_deterministic_per_seed(photo, policy, opts):
    t = T.make_train_transform(policy, 32, **opts)
    a, b, c = (t({"image": photo, "label": np.int32(3)}, rng(s)) for s in (7, 7, 8))
    assert a["image"].shape == (32, 32, 3) and a["image"].dtype == np.uint8 and a["label"] == 3
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_random_resized_crop_is_the_pillow_crop_of_its_box(photo):
    h, w = photo.shape[:2]
    for seed in range(5):
        top, left, ch, cw = T.random_resized_crop_params(h, w, rng(seed))
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
        area = ch * cw / (h * w)
        assert 0.07 <= area <= 1.0 and 3 / 4 - 0.1 <= cw / ch <= 4 / 3 + 0.1
        expected = np.asarray(Image.fromarray(photo).crop((left, top, left + cw, top + ch)).resize((24, 24),
                                                                                                    Image.BILINEAR))
        out = T.random_resized_crop(24)({"image": photo}, rng(seed))["image"]
        np.testing.assert_array_equal(out, expected)


def test_random_resized_crop_falls_back_to_a_center_crop():
    # No box of 2-3x the image area fits: the center crop with the ratio clamped to 4/3, like torchvision.
    assert T.random_resized_crop_params(10, 40, rng(0), scale=(2.0, 3.0)) == (0, 13, 10, 13)
    assert T.random_resized_crop_params(40, 10, rng(0), scale=(2.0, 3.0)) == (13, 0, 13, 10)
    assert T.random_resized_crop_params(30, 36, rng(0), scale=(2.0, 3.0)) == (0, 0, 30, 36)


def test_eval_center_crop_matches_pillow(photo):
    out = T.resize_center_crop(32)({"image": photo}, rng(0))["image"]  # shorter side round(32 / 0.875) = 37
    big = np.asarray(Image.fromarray(photo).resize((round(90 * 37 / 60), 37), Image.BILINEAR))
    top, left = (37 - 32) // 2, (big.shape[1] - 32) // 2
    np.testing.assert_array_equal(out, big[top:top + 32, left:left + 32])
    assert T.make_eval_transform(32)({"image": photo}, rng(1))["image"].shape == (32, 32, 3)


def test_vgg_scale_draws_shorter_sides_in_range(photo):
    t = T.random_resize_shorter(36, 40)
    sides = {min(t({"image": photo}, rng(s))["image"].shape[:2]) for s in range(40)}
    assert sides == {36, 37, 38, 39, 40}


def test_shift_policy_reproduces_the_old_digits_augment():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def old(image, g, max_shift=2):  # jaxcnn.data.augment before the transforms module
        padded = np.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
        dy, dx = g.integers(0, 2 * max_shift + 1, size=2)
        image = padded[dy:dy + 16, dx:dx + 16]
        return image[:, ::-1] if g.random() < 0.5 else image

    aug = make_augment(flip=True, max_shift=2)
    for seed in range(6):
        np.testing.assert_array_equal(aug({"image": image}, rng(seed))["image"], old(image, rng(seed)))


PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [250, 250, 250]], np.uint8)


def _coded_example(h=40, w=56, seed=0):
    """A mask of 8x8 blocks of labels 0..4 (a few 255), and an image whose colour is the block's label."""
    blocks = np.random.default_rng(seed).integers(0, 5, (h // 8, w // 8))
    blocks[0, 0] = 255
    mask = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)
    image = np.where((mask == 255)[..., None], 0, PALETTE[np.minimum(mask, 4)]).astype(np.uint8)
    return {"image": image, "mask": mask}


def _assert_aligned(ex):
    image, mask = ex["image"], ex["mask"]
    assert mask.dtype == np.uint8 and image.shape[:2] == mask.shape
    valid = mask != 255
    np.testing.assert_array_equal(image[valid], PALETTE[mask[valid]])
    np.testing.assert_array_equal(image[~valid], 0)


@pytest.mark.parametrize("transform", [
    T.make_train_transform("segmentation", 48, resample="nearest"),
    T.compose(T.random_resized_crop(24, resample="nearest"), T.hflip()),
    T.compose(T.random_resize_shorter(20, 60, resample="nearest"), T.random_crop(32), T.hflip()),
    T.compose(T.translate(5), T.hflip()),
    T.make_eval_transform(64, "pad", resample="nearest"),
    T.make_eval_transform(32, "pad", resample="nearest"),
])
def test_paired_transforms_keep_image_and_mask_aligned(transform):
    ex = _coded_example()
    for seed in range(8):
        out = transform(ex, rng(seed))
        _assert_aligned(out)
        assert len(np.unique(out["mask"][out["mask"] != 255])) >= 2  # several labels survive: a real check


def test_a_per_pixel_label_moves_like_a_mask():
    ex = _coded_example()
    t = T.make_train_transform("segmentation", 48, resample="nearest")
    as_label = t({"image": ex["image"], "label": ex["mask"]}, rng(4))
    as_mask = t(ex, rng(4))
    np.testing.assert_array_equal(as_label["label"], as_mask["mask"])
    np.testing.assert_array_equal(as_label["image"], as_mask["image"])


def test_segmentation_crop_pads_masks_with_ignore():
    ex = _coded_example(16, 16)
    out = T.random_crop(24, ignore_label=255)(ex, rng(0))
    assert out["image"].shape == (24, 24, 3) and out["mask"].shape == (24, 24)
    assert (out["mask"][16:] == 255).all() and (out["mask"][:, 16:] == 255).all()
    padded = T.make_eval_transform(20, "pad")(ex, rng(0))
    np.testing.assert_array_equal(padded["mask"][:16, :16], ex["mask"])
    assert (padded["mask"][16:] == 255).all()


def test_bilinear_image_resize_keeps_block_interiors_aligned():
    """With the default bilinear image resize, pixels away from block edges still match the mask's colour."""
    out = T.make_train_transform("segmentation", 48, min_scale=0.9, max_scale=1.1)(_coded_example(), rng(3))
    mask = out["mask"].astype(int)
    interior = np.ones_like(mask, bool)
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            interior &= np.roll(mask, (dy, dx), (0, 1)) == mask
    interior[:2] = interior[-2:] = interior[:, :2] = interior[:, -2:] = False
    interior &= mask != 255
    assert interior.sum() > 200
    np.testing.assert_allclose(out["image"][interior], PALETTE[mask[interior]], atol=2)


def test_lighting_equals_hand_computation(photo):
    alpha = rng(11).normal(0.0, 0.1, size=3)
    shift = 255.0 * (T.IMAGENET_EIGVEC @ (alpha * T.IMAGENET_EIGVAL))
    expected = np.clip(np.rint(photo.astype(np.float32) + shift.astype(np.float32)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(T.lighting(0.1)({"image": photo}, rng(11))["image"], expected)


def test_lighting_statistics_follow_the_principal_component():
    grey = np.full((1, 1, 3), 128, np.uint8)
    t = T.lighting(0.1)
    shifts = np.stack([t({"image": grey}, rng(s))["image"][0, 0].astype(float) - 128 for s in range(3000)])
    assert np.all(np.abs(shifts.mean(0)) < 0.4)  # zero-mean noise
    coords = shifts @ T.IMAGENET_EIGVEC  # coordinates along the eigenvectors (columns, ~orthonormal)
    np.testing.assert_allclose(coords[:, 0].std(), 255 * 0.1 * 0.2175, rtol=0.1)
    assert coords[:, 1].std() < 1.0 and coords[:, 2].std() < 1.0
    assert np.corrcoef(shifts.T).min() > 0.9  # mostly a brightness change: R, G, B move together


def test_transforms_refuse_unknown_policies_and_options():
    with pytest.raises(ValueError, match="valid: shift, inception, alexnet, vgg_scale, segmentation"):
        T.make_train_transform("autoaugment", 224)
    with pytest.raises(ValueError, match="unknown option.*lighting"):
        T.make_train_transform("inception", 224, lightning_std=0.1)
    with pytest.raises(ValueError, match="valid: center, pad, none"):
        T.make_eval_transform(224, "ten_crop")
