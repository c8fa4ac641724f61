"""Writes tests/data/augment_refs.npz: torchvision's AutoAugment operations, policies and RandomErasing boxes.

Run once in a PyTorch venv (torch 2.14.1, torchvision 0.29.1, scikit-image, Pillow as in the package's venv):

    /work/torchvenv/bin/python tests/refs/make_augment_refs.py

What it stores (uint8 images of 32 x 40 px cut from scikit-image's photos, to keep the file under 300 KB):

- ``photos``: astronaut, chelsea, coffee, rocket, centre-cropped to 4:5 and resized (Pillow bilinear);
- ``op_*``: torchvision's ``autoaugment._apply_op`` (the dispatch its RandAugment / TrivialAugmentWide /
  AutoAugment use, calling ``F.affine``/``F.rotate``/``F.adjust_*``/``F.posterize``/... on PIL images) for
  each operation at the minimum non-zero, RandAugment's default (bin 9 of 31) and the maximum bins, both signs
  for the signed ones, nearest (torchvision's default) and once bilinear for the geometric ones, and a
  translation with a fractional part above one half;
- ``spaces``: JSON of each class's ``_augmentation_space`` (float32 bins) and the ImageNet policy table;
- ``pol_*``: the classes themselves on a photo under several torch seeds, with the (op, magnitude) sequence
  each applied (recorded by wrapping ``_apply_op``);
- ``draw_*``: many recorded choices of each class (op index, magnitude) for the distribution tests;
- ``erase_boxes``: ``RandomErasing.get_params`` boxes (top, left, h, w) on an ``erase_hw`` image.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import InterpolationMode, RandomErasing
from torchvision.transforms import autoaugment as AA

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "augment_refs.npz")
H, W = 32, 40
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")
MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR}


def photo(name: str) -> np.ndarray:
    im = getattr(data, name)()
    h, w = im.shape[:2]
    ch, cw = (h, h * W // H) if w * H >= h * W else (w * H // W, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.asarray(Image.fromarray(im[top:top + ch, left:left + cw]).resize((W, H), Image.BILINEAR))


def table(space: dict) -> dict:
    return {k: [None if m.ndim == 0 else [float(x) for x in m.tolist()], bool(s)] for k, (m, s) in space.items()}


def main():
    photos = np.stack([photo(n) for n in NAMES])
    ta = AA.TrivialAugmentWide()
    ra = AA.RandAugment()
    aa = AA.AutoAugment(AA.AutoAugmentPolicy.IMAGENET)
    ta_space = ta._augmentation_space(31)
    ra_space = ra._augmentation_space(31, (H, W))
    aa_space = aa._augmentation_space(10, (H, W))

    cases = []   # (op, magnitude, photo index, resample)
    k = 0
    for op in GEOMETRIC + ENHANCE:
        top, mid, low = float(ta_space[op][0][30]), float(ra_space[op][0][9]), float(ta_space[op][0][1])
        mags = [top, -top, mid, -mid, low]
        for m in mags:
            cases.append((op, m, k % 4, "nearest"))
            k += 1
        if op in GEOMETRIC:
            cases.append((op, -top, k % 4, "bilinear"))
            k += 1
        if op.startswith("Translate"):   # 14.93 px: whole pixels are int(), not round()
            cases.append((op, float(ta_space[op][0][14]) * (-1 if op == "TranslateX" else 1), k % 4, "nearest"))
            k += 1
    for bits in (7, 4, 2):
        cases.append(("Posterize", float(bits), k % 4, "nearest"))
        k += 1
    solarize = ra_space["Solarize"][0][9], *ta_space["Solarize"][0][[15, 29, 30]], aa_space["Solarize"][0][4]
    for m in map(float, solarize):
        cases.append(("Solarize", m, k % 4, "nearest"))
        k += 1
    for op in ("AutoContrast", "Equalize", "Invert"):
        for i in range(2):
            cases.append((op, 0.0, k % 4, "nearest"))
            k += 1

    outs = []
    for op, m, i, mode in cases:
        out = AA._apply_op(Image.fromarray(photos[i]), op, m, interpolation=MODES[mode], fill=None)
        outs.append(np.asarray(out))

    # the classes, recording what they apply
    recorded: list = []
    original = AA._apply_op

    def recording(img, op_name, magnitude, interpolation, fill):
        recorded.append((op_name, magnitude))
        return original(img, op_name, magnitude, interpolation, fill)

    AA._apply_op = recording
    pol_kind, pol_seed, pol_out, pol_ops = [], [], [], []
    for kind, t in (("ra", ra), ("ta_wide", ta), ("imagenet", aa)):
        for seed in range(4):
            torch.manual_seed(seed)
            recorded.clear()
            pol_out.append(np.asarray(t(Image.fromarray(photos[seed]))))
            pol_kind.append(kind)
            pol_seed.append(seed)
            pol_ops.append(list(recorded))
    draws = {}
    tiny = Image.fromarray(photos[0][:4, :4])   # the choice only: tiny images make the draws cheap
    for kind, t in (("ra", ra), ("ta_wide", ta), ("imagenet", aa)):
        torch.manual_seed(100)
        ops, mags, counts = [], [], []
        for _ in range(4000):
            recorded.clear()
            t(tiny)
            counts.append(len(recorded))
            ops += [n for n, _ in recorded]
            mags += [m for _, m in recorded]
        draws[kind] = (ops, mags, counts)
    AA._apply_op = original
    # RandAugment's translate bins on the 4 x 4 image the draws used
    draw_spaces = {"ra": table(ra._augmentation_space(31, (4, 4))),
                   "imagenet": table(aa._augmentation_space(10, (4, 4)))}

    torch.manual_seed(7)
    erase_hw = (40, 56)
    boxes = [RandomErasing.get_params(torch.zeros(3, *erase_hw), scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0])[:4]
             for _ in range(2000)]

    spaces = {"ra": table(ra_space), "ta_wide": table(ta_space), "imagenet": table(aa_space),
              "ra_224": table(ra._augmentation_space(31, (224, 224))), "imagenet_policy": aa.policies,
              "draw_spaces": draw_spaces, "hw": [H, W]}
    arrays = dict(
        photos=photos, names=np.array(NAMES),
        op_name=np.array([c[0] for c in cases]), op_mag=np.array([c[1] for c in cases]),
        op_photo=np.array([c[2] for c in cases], np.int8), op_resample=np.array([c[3] for c in cases]),
        op_out=np.stack(outs),
        spaces=np.array(json.dumps(spaces)),
        pol_kind=np.array(pol_kind), pol_seed=np.array(pol_seed, np.int8), pol_out=np.stack(pol_out),
        pol_ops=np.array(json.dumps(pol_ops)),
        erase_hw=np.array(erase_hw), erase_boxes=np.array(boxes, np.int16),
    )
    for kind, (ops, mags, counts) in draws.items():
        arrays[f"draw_{kind}_op"] = np.array(ops)
        arrays[f"draw_{kind}_mag"] = np.array(mags, np.float32)
        arrays[f"draw_{kind}_count"] = np.array(counts, np.int8)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(cases)} op cases, {len(pol_out)} policy runs, {os.path.getsize(OUT) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
