"""AutoAugment operations, RandAugment / TrivialAugmentWide / AutoAugment (ImageNet) and random erasing against
torchvision (tests/data/augment_refs.npz, written by tests/refs/make_augment_refs.py), plus determinism.

Tolerances, per operation (both sides run the same Pillow calls, so today every case is bit-exact):
- geometric ops with nearest resampling, Posterize, Solarize, AutoContrast, Equalize, Invert: exact;
- Brightness, Color, Contrast, Sharpness and bilinear geometry (float results rounded on both sides): at most
  one intensity level, and at least 99% of the pixels exact.
"""

import json
import math
import os

import numpy as np
import pytest

from jaxcnn.data import autoaugment as A
from jaxcnn.data import transforms as T
from jaxcnn.data.erasing import erase_box, normalized_to_pixels, random_erasing
from jaxcnn.data.loader import train_batches
from jaxcnn.data.sources import ArraySource
from jaxcnn.imagenet import MEAN, STD

REFS = np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "augment_refs.npz"))
SPACES = json.loads(str(REFS["spaces"]))
PHOTOS = REFS["photos"]
ROUNDING = ("Brightness", "Color", "Contrast", "Sharpness")
CASES = [(str(n), float(m), int(i), str(r)) for n, m, i, r in zip(REFS["op_name"], REFS["op_mag"], REFS["op_photo"],
                                                                  REFS["op_resample"])]


def rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}{m:+.3g}-{r}" for n, m, _, r in CASES])
def test_op_matches_torchvision(case):
    name, magnitude, i, resample = CASES[case]
    ref = REFS["op_out"][case]
    assert not np.array_equal(ref, PHOTOS[i]), "a reference that equals its input tests nothing"
    out = A.apply_op(PHOTOS[i], name, magnitude, resample=resample)
    assert out.dtype == np.uint8 and out.shape == ref.shape
    diff = np.abs(out.astype(int) - ref)
    if name in ROUNDING or resample == "bilinear":
        assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99, (diff.max(), np.mean(diff == 0))
    else:
        np.testing.assert_array_equal(out, ref)


def test_every_op_is_checked():
    assert {n for n, *_ in CASES} == set(A.OPS) - {"Identity"}
    for name in ("ShearX", "Rotate", "Brightness", "Contrast"):   # both signs, the widest bins, one bilinear
        mags = [m for n, m, _, r in CASES if n == name]
        assert min(mags) < 0 < max(mags) and max(abs(m) for m in mags) >= 0.99
        assert any(r == "bilinear" for n, _, _, r in CASES if n == name) == (name in ("ShearX", "Rotate"))


def _as_space(table):
    return {k: (None if b is None else np.asarray(b, np.float32), s) for k, (b, s) in table.items()}


@pytest.mark.parametrize("key,policy,bins,hw", [("ra", "ra", 31, (32, 40)), ("ta_wide", "ta_wide", 31, (32, 40)),
                                                ("imagenet", "imagenet", 10, (32, 40)),
                                                ("ra_224", "ra", 31, (224, 224))])
def test_augmentation_space_is_torchvisions(key, policy, bins, hw):
    ref, mine = _as_space(SPACES[key]), A.augmentation_space(policy, bins, hw)
    assert list(mine) == list(ref)  # same ops in the same order
    for name, (b, signed) in ref.items():
        assert mine[name][1] == signed, name
        if b is None:
            assert mine[name][0] is None, name
        else:  # float32 bins equal to the bit (Posterize bits are integers)
            np.testing.assert_array_equal(np.asarray(mine[name][0], np.float32), b, err_msg=name)


def test_imagenet_policy_is_torchvisions():
    ref = tuple(tuple(tuple(step) for step in sub) for sub in SPACES["imagenet_policy"])
    assert A.IMAGENET_POLICY == ref


@pytest.mark.parametrize("run", range(len(REFS["pol_kind"])))
def test_policy_output_given_its_choice_matches_torchvision(run):
    """The classes' own output (RandAugment etc. on a PIL image, nearest) equals our ops applied in the order the
    class chose them; the chosen magnitudes are bins of our tables with a sign where the op is signed."""
    kind, seed = str(REFS["pol_kind"][run]), int(REFS["pol_seed"][run])
    ops = json.loads(str(REFS["pol_ops"]))[run]
    space = A.augmentation_space(kind, 10 if kind == "imagenet" else 31, PHOTOS[seed].shape[:2])
    image = PHOTOS[seed]
    for name, magnitude in ops:
        bins, signed = space[name]
        if bins is None:
            assert magnitude == 0.0
        else:
            assert np.float32(abs(magnitude) if signed else magnitude) in np.asarray(bins, np.float32), (name,
                                                                                                        magnitude)
        image = A.apply_op(image, name, magnitude)
    np.testing.assert_array_equal(image, REFS["pol_out"][run])


SAMPLERS = {"ra": lambda g: A.sample_rand_augment(g, (4, 4)), "ta_wide": lambda g: A.sample_trivial_augment(g),
            "imagenet": lambda g: A.sample_auto_augment(g, (4, 4))}


def _draws(kind, n=4000):
    g = rng(11)
    ops, counts = [], []
    for _ in range(n):
        chosen = SAMPLERS[kind](g)
        counts.append(len(chosen))
        ops += chosen
    return ops, np.array(counts)


@pytest.mark.parametrize("kind", ["ra", "ta_wide", "imagenet"])
def test_choice_distribution_matches_torchvision(kind):
    """4000 of our choices against 4000 recorded from the torchvision class: the same ops per image, the same
    (op, |magnitude|) values, each pair and each op about as often, half of the signed magnitudes negative."""
    mine, counts = _draws(kind)
    t_ops = [str(o) for o in REFS[f"draw_{kind}_op"]]
    t_mags = REFS[f"draw_{kind}_mag"].astype(np.float32)
    t_counts = REFS[f"draw_{kind}_count"]
    theirs = list(zip(t_ops, t_mags.tolist()))
    mine = [(n, float(np.float32(m))) for n, m in mine]
    if kind != "imagenet":
        assert set(counts) == set(t_counts) == {2 if kind == "ra" else 1}
    else:  # sub-policy steps applied with their probabilities: 0, 1 or 2 ops
        for c in (0, 1, 2):
            p = (np.mean(counts == c) + np.mean(t_counts == c)) / 2
            assert abs(np.mean(counts == c) - np.mean(t_counts == c)) < 5 * math.sqrt(2 * p * (1 - p) / 4000) + 1e-9

    def freq(pairs, key):
        keys = [key(p) for p in pairs]
        return {k: keys.count(k) / len(keys) for k in set(keys)}

    for key in (lambda p: p[0], lambda p: (p[0], abs(p[1]))):
        f_mine, f_theirs = freq(mine, key), freq(theirs, key)
        if kind != "ta_wide" or key(("x", 0.0)) == "x":  # TA's 300 (op, bin) pairs: support checked below
            assert set(f_mine) == set(f_theirs)
        for k in set(f_mine) | set(f_theirs):
            a, b = f_mine.get(k, 0.0), f_theirs.get(k, 0.0)
            p = (a + b) / 2
            assert abs(a - b) < 5 * math.sqrt(2 * p * (1 - p) / len(mine)) + 2 / len(mine), (k, a, b)
    # every value either side drew is a bin of the (shared) table
    space = _as_space(SPACES["draw_spaces"].get(kind, SPACES["ta_wide"]))
    for name, m in set(mine) | set(theirs):
        bins, signed = space[name]
        assert (m == 0.0) if bins is None else (np.float32(abs(m) if signed else m) in bins), (name, m)
    for pairs in (mine, theirs):
        signed = [m for n, m in pairs if space[n][1] and m != 0]
        assert abs(np.mean(np.array(signed) < 0) - 0.5) < 0.05


@pytest.mark.parametrize("kind", ["ra", "ta_wide", "imagenet"])
def test_policies_are_deterministic_given_the_generator(kind):
    t = A.make_auto_augment(kind)
    outs = [t({"image": PHOTOS[2], "label": np.int32(1)}, rng(s))["image"] for s in (3, 3, 4, 5, 6, 7)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert any(not np.array_equal(outs[0], o) for o in outs[2:])


@pytest.mark.parametrize("kind", ["ra", "ta_wide", "imagenet"])
def test_same_seed_and_index_same_pixels_through_the_loader(kind):
    src = ArraySource(np.repeat(PHOTOS, 4, axis=0), np.arange(16) % 4, 4)
    aug = T.make_train_transform("inception", 24, auto_augment=kind, random_erase=0.5, erase_value="random")

    def batches(seed, start):
        return [b["image"] for b in train_batches(src, global_batch=4, seed=seed, augment=aug, start_step=start,
                                                  num_steps=3)]

    a, b, c = batches(0, 0), batches(0, 1), batches(1, 0)
    for x, y in zip(a[1:], b):  # step 1 of a resumed stream equals step 1 of the first
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_inception_policy_runs_crop_flip_auto_augment_then_erasing():
    opts = {"auto_augment": "ta_wide", "random_erase": 1.0, "erase_value": (1.0, -1.0, 0.5)}
    t = T.make_train_transform("inception", 24, **opts)
    by_hand = T.compose(T.random_resized_crop(24), T.hflip(), A.make_auto_augment("ta_wide", resample="bilinear"),
                        random_erasing(1.0, value=(1.0, -1.0, 0.5)))
    for seed in range(6):
        ex = {"image": PHOTOS[seed % 4], "label": np.int32(0)}
        np.testing.assert_array_equal(t(ex, rng(seed))["image"], by_hand(ex, rng(seed))["image"])
    ra = T.make_train_transform("inception", 24, auto_augment="ra", ra_magnitude=30, ra_num_ops=3)
    assert ra({"image": PHOTOS[0]}, rng(0))["image"].shape == (24, 24, 3)


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown auto_augment 'trivial'; valid: ra, ta_wide, imagenet"):
        T.make_train_transform("inception", 24, auto_augment="trivial")
    with pytest.raises(ValueError, match="ra_magnitude/ra_num_ops are options of auto_augment='ra'"):
        T.make_train_transform("inception", 24, auto_augment="ta_wide", ra_magnitude=9)
    with pytest.raises(ValueError, match="magnitude 31 is not a bin of 0..30"):
        T.make_train_transform("inception", 24, auto_augment="ra", ra_magnitude=31)
    with pytest.raises(ValueError, match="unknown option.*auto_augmnet"):
        T.make_train_transform("inception", 24, auto_augmnet="ra")
    with pytest.raises(ValueError, match="valid: 'random', a number or three numbers"):
        T.make_train_transform("inception", 24, random_erase=0.25, erase_value="noise")
    with pytest.raises(ValueError, match="probability must be in"):
        random_erasing(1.5)
    with pytest.raises(ValueError, match="unknown augmentation op 'Blur'; valid: Identity, ShearX"):
        A.apply_op(PHOTOS[0], "Blur", 1.0)
    with pytest.raises(ValueError, match="per-pixel target"):
        A.make_auto_augment("ta_wide")({"image": PHOTOS[0], "mask": np.zeros((32, 40), np.uint8)}, rng(0))


# -- random erasing ---------------------------------------------------------------------------------------------

def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(fa - fb).max()


def test_erase_boxes_follow_torchvisions_distribution():
    h, w = map(int, REFS["erase_hw"])
    theirs = REFS["erase_boxes"].astype(int)
    g = rng(5)
    mine = np.array([erase_box(h, w, g) or (0, 0, h, w) for _ in range(len(theirs))])
    for boxes in (mine, theirs):
        top, left, eh, ew = boxes.T
        fits = eh < h
        assert np.all((top[fits] >= 0) & (top[fits] + eh[fits] <= h) & (left[fits] >= 0) & (left[fits] + ew[fits] <= w))
    crit = 1.95 * math.sqrt(2 / len(theirs))  # KS at the 0.1% level
    for stat in (lambda b: b[:, 2] * b[:, 3] / (h * w), lambda b: np.log(b[:, 2] / b[:, 3]),
                 lambda b: (b[:, 0] + b[:, 2] / 2) / h, lambda b: (b[:, 1] + b[:, 3] / 2) / w):
        assert _ks(stat(mine), stat(theirs)) < crit
    assert abs(np.mean(mine[:, 2] == h) - np.mean(theirs[:, 2] == h)) < 0.03   # no box fitted in 10 tries


def test_erase_box_against_a_numpy_rejection_sampler():
    """Independent float64 NumPy sampler of the same process: area fraction U(scale), log-ratio U(log ratio),
    h = round(sqrt(area * r)), w = round(sqrt(area / r)), kept if it fits, first of 10."""
    h, w, n = 30, 50, 3000
    g = rng(8)
    u = g.uniform(0.02, 0.33, (n, 10)) * h * w
    r = np.exp(g.uniform(np.log(0.3), np.log(3.3), (n, 10)))
    eh, ew = np.rint(np.sqrt(u * r)).astype(int), np.rint(np.sqrt(u / r)).astype(int)
    ok = (eh < h) & (ew < w)
    first = ok.argmax(1)
    ref = np.where(ok.any(1)[:, None], np.stack([eh[np.arange(n), first], ew[np.arange(n), first]], 1), -1)
    g2 = rng(9)
    mine = np.array([(b[2], b[3]) if (b := erase_box(h, w, g2)) else (-1, -1) for _ in range(n)])
    crit = 1.95 * math.sqrt(2 / n)
    assert _ks(mine[:, 0] * mine[:, 1], ref[:, 0] * ref[:, 1]) < crit
    assert _ks(mine[:, 0] / np.maximum(mine[:, 1], 1), ref[:, 0] / np.maximum(ref[:, 1], 1)) < crit


def test_erasing_fill_is_the_normalized_value():
    image = PHOTOS[1]
    for value, fill in ((0, (124, 116, 104)), ((1.0, -1.0, 0.5), None)):
        fill = np.array(fill) if fill is not None else np.rint(255 * (np.array(MEAN) + np.array(STD) *
                                                                        np.array(value))).astype(int)
        out = random_erasing(1.0, value=value)({"image": image}, rng(2))["image"]
        g = rng(2)
        g.random()
        top, left, eh, ew = erase_box(32, 40, g)
        inside = np.zeros((32, 40), bool)
        inside[top:top + eh, left:left + ew] = True
        assert np.all(out[inside] == fill) and np.array_equal(out[~inside], image[~inside])
    np.testing.assert_array_equal(normalized_to_pixels(np.zeros(3)), [124, 116, 104])


def test_random_erasing_noise_is_standard_normal_in_model_units():
    """Inside the box, the model's normalized input is N(0, 1) noise up to uint8 rounding and clipping (the
    reference: 10^6 float64 normal draws mapped through round(255 * (MEAN + STD * z)) clipped)."""
    big = np.zeros((200, 200, 3), np.uint8)
    out = random_erasing(1.0, scale=(0.3, 0.33), ratio=(1.0, 1.0), value="random")({"image": big}, rng(4))["image"]
    g = rng(4)
    g.random()
    top, left, eh, ew = erase_box(200, 200, g, (0.3, 0.33), (1.0, 1.0))
    z = (out[top:top + eh, left:left + ew].reshape(-1, 3) / 255.0 - np.array(MEAN)) / np.array(STD)
    assert len(z) > 10000 and not out[:top].any() and not out[top + eh:].any()
    ref = np.clip(np.rint(255 * (np.array(MEAN) + np.array(STD) * rng(0).standard_normal((10 ** 6, 3)))), 0, 255)
    ref = (ref / 255.0 - np.array(MEAN)) / np.array(STD)
    se = 4 / math.sqrt(len(z))
    np.testing.assert_allclose(z.mean(0), ref.mean(0), atol=se)
    np.testing.assert_allclose(z.std(0), ref.std(0), atol=se)
    assert np.all(np.abs(ref.std(0) - 1) < 0.06)   # clipping trims the tails only a little


def test_erasing_probability():
    t = random_erasing(0.25)
    hit = [not np.array_equal(t({"image": PHOTOS[0]}, rng(s))["image"], PHOTOS[0]) for s in range(2000)]
    assert abs(np.mean(hit) - 0.25 * 0.97) < 0.04   # a few draws find no box that fits
