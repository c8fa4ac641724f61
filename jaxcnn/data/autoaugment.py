"""AutoAugment's image operations and the RandAugment, TrivialAugmentWide and AutoAugment (ImageNet) policies.

Host transforms on uint8 (H, W, 3) NumPy images that do what torchvision's
``torchvision.transforms.autoaugment`` does on PIL images: the same Pillow
calls with the same arguments (``ImageEnhance`` factors ``1 + magnitude``,
``ImageOps`` posterize/solarize/autocontrast/equalize/invert, and
``Image.transform`` affine matrices built like ``F.affine``: shears about the
top-left corner, translations and rotations about the image centre, fill 0),
so the pixels agree with torchvision's PIL backend. The magnitude tables are
torchvision's ``_augmentation_space`` (float32 ``linspace`` bins, computed the
way ``torch.linspace`` does); a signed op is negated with probability 1/2.

Every random choice comes from the transform's NumPy generator, which the
loader seeds by (seed, example index): a run's augmented images do not depend
on how it is split over processes or restarted. The draws differ from
torch's generator, so the same seed does not give torchvision's choices; the
choice *distribution* is the same (``sample_*`` expose it for tests).

``apply_op(image, name, magnitude)`` is one operation;
``make_auto_augment(name, ...)`` gives the transform of a policy in
``AUTO_AUGMENT``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

Example = dict
Transform = Callable[[Example, np.random.Generator], Example]
Op = tuple[str, float]   # (operation name, signed magnitude)

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")

# AutoAugment's ImageNet policy (Cubuk et al. 2019, as torchvision lists it): 25 sub-policies of two
# (operation, probability, magnitude bin of 10) steps.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)


# -- magnitude tables ------------------------------------------------------------------------------------------

def linspace32(start: float, end: float, num: int) -> np.ndarray:
    """``torch.linspace(start, end, num)`` in float32, to the bit: a float32 step; the first half counts up
    from ``start``, the rest down from ``end``, each bin one fused multiply-add (the product of two float32
    values is exact in float64, so the float64 sum rounded to float32 is the fused result)."""
    start32, end32 = np.float32(start), np.float32(end)
    if num == 1:
        return np.array([start32], np.float32)
    step = np.float64(np.float32((end32 - start32) / np.float32(num - 1)))
    idx = np.arange(num, dtype=np.float64)
    up = np.float64(start32) + step * idx
    down = np.float64(end32) - step * (num - 1 - idx)
    return np.where(idx < num // 2, up, down).astype(np.float32)


def _posterize_bits(num_bins: int, levels: int) -> np.ndarray:
    """``8 - round(arange(num_bins) / ((num_bins - 1) / levels))``: 8 bits down to ``8 - levels``."""
    return (8 - np.round(np.arange(num_bins, dtype=np.float32) / np.float32((num_bins - 1) / levels))).astype(int)


def augmentation_space(policy: str, num_bins: int, image_hw: tuple[int, int]) -> dict[str, tuple[np.ndarray | None,
                                                                                                  bool]]:
    """torchvision's ``_augmentation_space`` of ``policy``: op name -> (magnitude bins or None, signed), in its order.

    ``"ra"`` (RandAugment) and ``"imagenet"`` (AutoAugment) share the narrow ranges, the latter without
    Identity and with Invert; ``"ta_wide"`` (TrivialAugmentWide) has the wide ones (shear 0.99, translate
    32 px, rotate 135 degrees, enhance 0.99, posterize to 2 bits) independent of the image size.
    """
    h, w = image_hw
    if policy == "ta_wide":
        space = {"Identity": (None, False), "ShearX": (linspace32(0, 0.99, num_bins), True),
                 "ShearY": (linspace32(0, 0.99, num_bins), True), "TranslateX": (linspace32(0, 32.0, num_bins), True),
                 "TranslateY": (linspace32(0, 32.0, num_bins), True), "Rotate": (linspace32(0, 135.0, num_bins), True)}
        enhance, levels = 0.99, 6
    elif policy in ("ra", "imagenet"):
        space = {} if policy == "imagenet" else {"Identity": (None, False)}
        space.update({"ShearX": (linspace32(0, 0.3, num_bins), True), "ShearY": (linspace32(0, 0.3, num_bins), True),
                      "TranslateX": (linspace32(0, 150.0 / 331.0 * w, num_bins), True),
                      "TranslateY": (linspace32(0, 150.0 / 331.0 * h, num_bins), True),
                      "Rotate": (linspace32(0, 30.0, num_bins), True)})
        enhance, levels = 0.9, 4
    else:
        raise ValueError(f"unknown augmentation space {policy!r}; valid: ra, ta_wide, imagenet")
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        space[name] = (linspace32(0, enhance, num_bins), True)
    space["Posterize"] = (_posterize_bits(num_bins, levels), False)
    space["Solarize"] = (linspace32(255.0, 0.0, num_bins), False)
    for name in ("AutoContrast", "Equalize") + (("Invert",) if policy == "imagenet" else ()):
        space[name] = (None, False)
    return space


# -- operations ------------------------------------------------------------------------------------------------

def inverse_affine_matrix(center: tuple[float, float], angle: float, translate: tuple[float, float], scale: float,
                          shear: tuple[float, float]) -> list[float]:
    """The output-to-input matrix Pillow's ``Image.AFFINE`` takes for ``F.affine``'s parameters (degrees,
    clockwise; ``M = T C RSS C^-1`` inverted), computed as torchvision's ``_get_inverse_affine_matrix`` does."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def _affine(img: Image.Image, resample: int, fill: tuple[int, ...], *, center=None, translate=(0, 0),
            shear=(0.0, 0.0)) -> Image.Image:
    center = center if center is not None else (img.size[0] * 0.5, img.size[1] * 0.5)
    matrix = inverse_affine_matrix(center, 0.0, translate, 1.0, shear)
    return img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)


def apply_op(image: np.ndarray, name: str, magnitude: float, *, resample: str = "nearest",
             fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """torchvision's ``_apply_op(img, name, magnitude)`` on a uint8 (H, W, 3) image: a new uint8 array.

    Shears take ``magnitude`` as the shear factor (``atan`` to degrees, about the top-left corner), translations
    whole pixels (``int(magnitude)``), Rotate degrees counter-clockwise about the centre, enhancements the factor
    ``1 + magnitude``, Posterize bits, Solarize the threshold; areas moved in are ``fill``.
    """
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; valid: {', '.join(OPS)}")
    if name == "Identity":
        return image
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; valid: {', '.join(RESAMPLE)}")
    mode, img = RESAMPLE[resample], Image.fromarray(np.ascontiguousarray(image))
    fill = tuple(int(v) for v in fill)
    if name == "ShearX":
        out = _affine(img, mode, fill, center=(0, 0), shear=(math.degrees(math.atan(magnitude)), 0.0))
    elif name == "ShearY":
        out = _affine(img, mode, fill, center=(0, 0), shear=(0.0, math.degrees(math.atan(magnitude))))
    elif name == "TranslateX":
        out = _affine(img, mode, fill, translate=(int(magnitude), 0))
    elif name == "TranslateY":
        out = _affine(img, mode, fill, translate=(0, int(magnitude)))
    elif name == "Rotate":
        out = img.rotate(magnitude, mode, expand=False, center=None, fillcolor=fill)
    elif name in ("Brightness", "Color", "Contrast", "Sharpness"):
        out = getattr(ImageEnhance, name)(img).enhance(1.0 + magnitude)
    elif name == "Posterize":
        out = ImageOps.posterize(img, int(magnitude))
    elif name == "Solarize":
        out = ImageOps.solarize(img, magnitude)
    elif name == "AutoContrast":
        out = ImageOps.autocontrast(img)
    elif name == "Equalize":
        out = ImageOps.equalize(img)
    else:  # Invert
        out = ImageOps.invert(img)
    return np.asarray(out)


# -- policies: the random choices ------------------------------------------------------------------------------

def _signed(magnitude: float, signed: bool, rng: np.random.Generator) -> float:
    return -magnitude if signed and rng.integers(2) else magnitude


def sample_rand_augment(rng: np.random.Generator, image_hw: tuple[int, int], *, num_ops: int = 2,
                        magnitude: int = 9, num_magnitude_bins: int = 31) -> list[Op]:
    """RandAugment's choice: ``num_ops`` ops uniform over its 14 (Identity included), each at bin ``magnitude``."""
    space = augmentation_space("ra", num_magnitude_bins, image_hw)
    names = list(space)
    ops = []
    for _ in range(num_ops):
        name = names[int(rng.integers(len(names)))]
        bins, signed = space[name]
        ops.append((name, _signed(float(bins[magnitude]), signed, rng) if bins is not None else 0.0))
    return ops


def sample_trivial_augment(rng: np.random.Generator, image_hw: tuple[int, int] | None = None, *,
                           num_magnitude_bins: int = 31) -> list[Op]:
    """TrivialAugmentWide's choice: one op uniform over its 14, its bin uniform over ``num_magnitude_bins``."""
    space = augmentation_space("ta_wide", num_magnitude_bins, (0, 0))
    names = list(space)
    name = names[int(rng.integers(len(names)))]
    bins, signed = space[name]
    if bins is None:
        return [(name, 0.0)]
    return [(name, _signed(float(bins[int(rng.integers(len(bins)))]), signed, rng))]


def sample_auto_augment(rng: np.random.Generator, image_hw: tuple[int, int]) -> list[Op]:
    """AutoAugment ImageNet's choice: a sub-policy uniform over 25; each step applied with its probability at
    its bin of 10."""
    space = augmentation_space("imagenet", 10, image_hw)
    steps = IMAGENET_POLICY[int(rng.integers(len(IMAGENET_POLICY)))]
    probs, signs = rng.random(2), rng.integers(2, size=2)
    ops = []
    for (name, p, bin_), u, sign in zip(steps, probs, signs):
        if u <= p:
            bins, signed = space[name]
            m = float(bins[bin_]) if bin_ is not None else 0.0
            ops.append((name, -m if signed and sign == 0 else m))
    return ops


def _policy_transform(sample: Callable[[np.random.Generator, tuple[int, int]], list[Op]], resample: str,
                      fill: tuple[int, int, int]) -> Transform:
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; valid: {', '.join(RESAMPLE)}")

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if any(np.ndim(example.get(k)) == 2 for k in ("mask", "label")):
            raise ValueError("auto_augment is for classification: its geometric ops would not move a per-pixel target")
        image = example["image"]
        for name, magnitude in sample(rng, image.shape[:2]):
            image = apply_op(image, name, magnitude, resample=resample, fill=fill)
        return {**example, "image": image}

    return transform


AUTO_AUGMENT = ("ra", "ta_wide", "imagenet")


def make_auto_augment(name: str, *, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                      resample: str = "nearest", fill: tuple[int, int, int] = (0, 0, 0)) -> Transform:
    """The transform of policy ``name``: ``"ra"`` RandAugment(num_ops, magnitude, num_magnitude_bins),
    ``"ta_wide"`` TrivialAugmentWide(num_magnitude_bins), ``"imagenet"`` AutoAugment(IMAGENET)."""
    if name == "ra":
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"RandAugment magnitude {magnitude} is not a bin of 0..{num_magnitude_bins - 1}")
        if num_ops < 0:
            raise ValueError(f"RandAugment num_ops must be >= 0, got {num_ops}")
        return _policy_transform(lambda rng, hw: sample_rand_augment(
            rng, hw, num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins), resample, fill)
    if name == "ta_wide":
        return _policy_transform(lambda rng, hw: sample_trivial_augment(rng, hw, num_magnitude_bins=num_magnitude_bins),
                                 resample, fill)
    if name == "imagenet":
        return _policy_transform(sample_auto_augment, resample, fill)
    raise ValueError(f"unknown auto_augment {name!r}; valid: {', '.join(AUTO_AUGMENT)}")


__all__ = ["AUTO_AUGMENT", "IMAGENET_POLICY", "OPS", "apply_op", "augmentation_space", "inverse_affine_matrix",
           "linspace32", "make_auto_augment", "sample_auto_augment", "sample_rand_augment", "sample_trivial_augment"]
