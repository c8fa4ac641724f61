"""Per-example transforms on uint8 HWC images, deterministic given a NumPy Generator.

A transform is ``(example, rng) -> example``; the loader seeds ``rng`` by
(seed, example index), so a run sees the same augmented images however it is
split over processes or restarted. Geometric transforms also move an example's
``"mask"`` (segmentation; or an (H, W) ``"label"``, as
``jaxcnn.training.segmentation.MaskAsLabel`` renames it) with the same crop,
flip and scale: masks are resized nearest-neighbour and padded with the ignore
label; images are resized with Pillow (bilinear by default, antialiased when
shrinking) and padded with 0.

Building blocks (each a factory returning a transform): ``translate``,
``hflip``, ``random_resized_crop``, ``resize_shorter``,
``random_resize_shorter``, ``random_scale``, ``random_crop``, ``center_crop``,
``pad_to``, ``lighting``; ``compose`` chains them. Policies put them together:
``make_train_transform(policy, size, **opts)`` and ``make_eval_transform(size,
policy=...)``; ``policy_flips`` says whether a training policy mirrors images.
The ``inception`` and ``shift`` policies also take torchvision's recipe options
``auto_augment`` (RandAugment / TrivialAugmentWide / AutoAugment,
``jaxcnn.data.autoaugment``) and ``random_erase`` (``jaxcnn.data.erasing``).
Ten-crop evaluation is ``jaxcnn.training.evaluation.ten_crops`` (host NumPy, on
batches): it takes mirrored crops only from runs whose policy flipped; there is
no per-example ten-crop here.

Encoded images. A transform marked ``reads_encoded`` also takes an example whose
image is an ``jaxcnn.data.image_io.Encoded`` file (sources that hold files hand
them out with ``src.encoded(i)``; the loader asks for them when the transform
reads them): ``random_resized_crop`` decodes only what its crop needs (a JPEG at
1/2, 1/4 or 1/8 scale when the crop is at least twice the output size, option
``draft``, ``jaxcnn.data.image_io.decode_resized_crop``) and ``resize_shorter``
resizes the decoded image without array copies (the same pixels as a full
decode). ``compose`` reads encoded images too: it decodes in full before the
first transform that does not. Measured by ``benchmarks/pipeline.py``.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from jaxcnn.data.autoaugment import make_auto_augment
from jaxcnn.data.erasing import random_erasing
from jaxcnn.data.image_io import Encoded, decode_resized, decode_resized_crop

Example = dict
Transform = Callable[[Example, np.random.Generator], Example]

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}

# ImageNet RGB covariance eigen-decomposition on [0, 1] pixels (Krizhevsky et al. 2012, as in fb.resnet.torch):
# eigenvectors are the columns of IMAGENET_EIGVEC.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])


def reads_encoded(transform: Transform) -> bool:
    """Whether ``transform`` takes examples whose image is an ``Encoded`` file."""
    return bool(getattr(transform, "reads_encoded", False))


def _encoded_reader(transform: Transform) -> Transform:
    transform.reads_encoded = True
    return transform


def decoded(example: Example) -> Example:
    """``example`` with an ``Encoded`` image decoded in full (others as they are)."""
    image = example["image"]
    return {**example, "image": image.decode()} if isinstance(image, Encoded) else example


def _is_encoded(example: Example) -> bool:
    return isinstance(example["image"], Encoded)


def _has_pixel_target(example: Example) -> bool:
    return any(key in example and np.ndim(example[key]) == 2 for key in ("mask", "label"))


def compose(*transforms: Transform) -> Transform:
    """Applies ``transforms`` in order, all drawing from the same generator; an ``Encoded`` image is decoded
    in full before the first transform that does not read encoded images (and at the end, if none did)."""

    def composed(example: Example, rng: np.random.Generator) -> Example:
        for t in transforms:
            if not reads_encoded(t) and _is_encoded(example):
                example = decoded(example)
            example = t(example, rng)
        return decoded(example)

    return _encoded_reader(composed)


# -- geometry on one array ---------------------------------------------------------------------------------------

def _resize(a: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    if a.shape[:2] == tuple(hw):
        return a
    return np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), resample))


def _pad(a: np.ndarray, hw: tuple[int, int], value: int) -> np.ndarray:
    """Pads bottom/right up to at least ``hw``."""
    ph, pw = max(0, hw[0] - a.shape[0]), max(0, hw[1] - a.shape[1])
    if not ph and not pw:
        return a
    return np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2), constant_values=value)


def _geometric(example: Example, fn: Callable[[np.ndarray, bool], np.ndarray]) -> Example:
    """Applies ``fn(array, is_mask)`` to the image and to any per-pixel target ("mask", or an (H, W) "label")."""
    out = {**example, "image": np.ascontiguousarray(fn(example["image"], False))}
    for key in ("mask", "label"):
        if key in example and np.ndim(example[key]) == 2:
            out[key] = np.ascontiguousarray(fn(example[key], True))
    return out


def _shorter_side_hw(h: int, w: int, shorter: int) -> tuple[int, int]:
    scale = shorter / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


# -- transforms ------------------------------------------------------------------------------------------------

def translate(max_shift: int, ignore_label: int = 255) -> Transform:
    """Shifts by up to ``max_shift`` pixels in x and y (zero fill): a pad-and-random-crop."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if max_shift <= 0:
            return example
        h, w = example["image"].shape[:2]
        dy, dx = rng.integers(0, 2 * max_shift + 1, size=2)
        m = max_shift

        def shift(a, is_mask):
            pad = ((m, m), (m, m)) + ((0, 0),) * (a.ndim - 2)
            return np.pad(a, pad, constant_values=ignore_label if is_mask else 0)[dy:dy + h, dx:dx + w]

        return _geometric(example, shift)

    return transform


def hflip(p: float = 0.5) -> Transform:
    """Horizontal reflection with probability ``p``."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        return _geometric(example, lambda a, _: a[:, ::-1]) if rng.random() < p else example

    return transform


def random_resized_crop_params(h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0),
                               ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The box ``(top, left, height, width)`` of an Inception crop, as torchvision draws it.

    Area a uniform fraction ``scale`` of the image, aspect ratio log-uniform in
    ``ratio``; after 10 draws that do not fit, the central crop of the largest
    box whose ratio is within ``ratio``.
    """
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return int(top), int(left), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        ch, cw = h, round(h * max(ratio))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), resample: str = "bilinear",
                        draft: bool = True) -> Transform:
    """Inception-style crop (``random_resized_crop_params``) resized to ``size`` x ``size``.

    On an ``Encoded`` image the box is drawn from the header's size (the same draws as for the decoded
    array) and only the crop is decoded and resized (``decode_resized_crop``); with ``draft`` a JPEG whose
    crop is at least twice ``size`` is decoded at reduced scale, which changes the pixels slightly (see
    there); without it the output equals the decoded array's.
    """
    mode = RESAMPLE[resample]

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if _is_encoded(example) and _has_pixel_target(example):
            example = decoded(example)
        image = example["image"]
        h, w = image.size() if isinstance(image, Encoded) else image.shape[:2]
        top, left, ch, cw = random_resized_crop_params(h, w, rng, scale, ratio)
        if isinstance(image, Encoded):
            return {**example, "image": decode_resized_crop(image, (top, left, ch, cw), (size, size), mode, draft)}
        return _geometric(example, lambda a, is_mask: _resize(a[top:top + ch, left:left + cw], (size, size),
                                                              Image.NEAREST if is_mask else mode))

    return _encoded_reader(transform)


def resize_shorter(size: int, resample: str = "bilinear") -> Transform:
    """Resizes so the shorter side is ``size``, keeping the aspect ratio."""
    mode = RESAMPLE[resample]

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if _is_encoded(example) and _has_pixel_target(example):
            example = decoded(example)
        image = example["image"]
        if isinstance(image, Encoded):
            return {**example, "image": decode_resized(image, _shorter_side_hw(*image.size(), size), mode)}
        hw = _shorter_side_hw(*image.shape[:2], size)
        return _geometric(example, lambda a, is_mask: _resize(a, hw, Image.NEAREST if is_mask else mode))

    return _encoded_reader(transform)


def random_resize_shorter(min_size: int, max_size: int, resample: str = "bilinear") -> Transform:
    """VGG scale augmentation: shorter side uniform in the integers ``[min_size, max_size]``."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        return resize_shorter(int(rng.integers(min_size, max_size + 1)), resample)(example, rng)

    return transform


def random_scale(min_scale: float, max_scale: float, resample: str = "bilinear") -> Transform:
    """Resizes by a factor uniform in ``[min_scale, max_scale]`` (segmentation scale jitter)."""
    mode = RESAMPLE[resample]

    def transform(example: Example, rng: np.random.Generator) -> Example:
        s = rng.uniform(min_scale, max_scale)
        h, w = example["image"].shape[:2]
        hw = max(1, round(h * s)), max(1, round(w * s))
        return _geometric(example, lambda a, is_mask: _resize(a, hw, Image.NEAREST if is_mask else mode))

    return transform


def random_crop(size: int, ignore_label: int = 255) -> Transform:
    """A uniformly placed ``size`` x ``size`` crop; smaller images are first padded (image 0, mask ignore)."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        h, w = example["image"].shape[:2]
        top = int(rng.integers(0, max(h, size) - size + 1))
        left = int(rng.integers(0, max(w, size) - size + 1))
        return _geometric(example, lambda a, is_mask: _pad(a, (size, size), ignore_label if is_mask else 0)
                          [top:top + size, left:left + size])

    return transform


def center_crop(size: int, ignore_label: int = 255) -> Transform:
    """The central ``size`` x ``size`` crop (smaller images padded first, like ``random_crop``)."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        h, w = example["image"].shape[:2]
        top, left = max(0, h - size) // 2, max(0, w - size) // 2
        return _geometric(example, lambda a, is_mask: _pad(a, (size, size), ignore_label if is_mask else 0)
                          [top:top + size, left:left + size])

    return transform


def pad_to(size: int, ignore_label: int = 255, resample: str = "bilinear") -> Transform:
    """Whole image in a ``size`` x ``size`` frame: shrunk to fit if larger, padded bottom/right (mask: ignore)."""
    mode = RESAMPLE[resample]

    def transform(example: Example, rng: np.random.Generator) -> Example:
        h, w = example["image"].shape[:2]
        s = min(1.0, size / max(h, w))
        hw = min(size, max(1, round(h * s))), min(size, max(1, round(w * s)))
        return _geometric(example, lambda a, is_mask: _pad(_resize(a, hw, Image.NEAREST if is_mask else mode),
                                                           (size, size), ignore_label if is_mask else 0))

    return transform


def lighting_offset(alpha: np.ndarray, eigval: np.ndarray = IMAGENET_EIGVAL,
                    eigvec: np.ndarray = IMAGENET_EIGVEC) -> np.ndarray:
    """The RGB shift ``eigvec @ (alpha * eigval)`` on the [0, 1] pixel scale (Krizhevsky et al. 2012, sec. 4.1)."""
    return eigvec @ (np.asarray(alpha) * eigval)


def lighting(std: float = 0.1, eigval: np.ndarray = IMAGENET_EIGVAL, eigvec: np.ndarray = IMAGENET_EIGVEC) -> Transform:
    """PCA colour noise: adds ``lighting_offset(alpha)``, ``alpha ~ N(0, std)`` per image, to every pixel."""

    def transform(example: Example, rng: np.random.Generator) -> Example:
        if std <= 0:
            return example
        shift = 255.0 * lighting_offset(rng.normal(0.0, std, size=3), eigval, eigvec)
        image = np.clip(np.rint(example["image"].astype(np.float32) + shift.astype(np.float32)), 0, 255)
        return {**example, "image": image.astype(np.uint8)}

    return transform


# -- policies --------------------------------------------------------------------------------------------------

def _auto_augment_options(auto_augment: str | None, ra_magnitude: int | None, ra_num_ops: int | None,
                          random_erase: float, erase_value, resample: str) -> tuple[list, list]:
    """The policy options ``auto_augment`` (``ra``/``ta_wide``/``imagenet``, ``jaxcnn.data.autoaugment``;
    ``ra_magnitude``/``ra_num_ops`` for ``ra``) and ``random_erase`` (probability; ``erase_value``,
    ``jaxcnn.data.erasing``): the transforms to run after the flip, and last."""
    if auto_augment != "ra" and (ra_magnitude is not None or ra_num_ops is not None):
        raise ValueError(f"ra_magnitude/ra_num_ops are options of auto_augment='ra', not {auto_augment!r}")
    colour = []
    if auto_augment is not None:
        ra = {"magnitude": 9 if ra_magnitude is None else ra_magnitude, "num_ops": 2 if ra_num_ops is None else
              ra_num_ops} if auto_augment == "ra" else {}
        colour = [make_auto_augment(auto_augment, resample=resample, **ra)]
    erase = [random_erasing(random_erase, value=erase_value)] if random_erase else []
    if not random_erase and erase_value != 0:
        raise ValueError("erase_value is an option of random_erase > 0")
    return colour, erase


def _shift_policy(size=None, *, max_shift: int = 2, flip: bool = False, auto_augment: str | None = None,
                  ra_magnitude: int | None = None, ra_num_ops: int | None = None, random_erase: float = 0.0,
                  erase_value=0) -> Transform:
    """Digits: random translation by up to ``max_shift`` pixels (+ optional flip); ``size`` unused; then the
    optional ``auto_augment`` (nearest-neighbour geometry) and ``random_erase`` (see ``_inception_policy``)."""
    colour, erase = _auto_augment_options(auto_augment, ra_magnitude, ra_num_ops, random_erase, erase_value,
                                          "nearest")
    return compose(translate(max_shift), *([hflip()] if flip else []), *colour, *erase)


def _inception_policy(size: int, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True,
                      lighting_std: float = 0.0, resample: str = "bilinear", auto_augment: str | None = None,
                      ra_magnitude: int | None = None, ra_num_ops: int | None = None, random_erase: float = 0.0,
                      erase_value=0, jpeg_draft: bool = True) -> Transform:
    """GoogLeNet/ResNet: random-resized crop, flip, optional PCA lighting; torchvision's recipe options in its
    order (crop, flip, ``auto_augment``, [normalize], ``random_erase``): ``auto_augment`` is ``ra`` (RandAugment,
    ``ra_num_ops`` 2 at bin ``ra_magnitude`` 9 of 31), ``ta_wide`` (TrivialAugmentWide) or ``imagenet``
    (AutoAugment's ImageNet policy), its geometric ops resampled with ``resample`` like the crop (as torchvision's
    presets pass one interpolation to both); ``random_erase`` is RandomErasing's probability, ``erase_value`` its
    fill in normalized units (0: the mean colour; ``"random"``: normal noise), ``jaxcnn.data.erasing``.
    ``jpeg_draft``: JPEGs whose crop is at least twice ``size`` are decoded at reduced scale
    (``random_resized_crop``'s ``draft``)."""
    colour, erase = _auto_augment_options(auto_augment, ra_magnitude, ra_num_ops, random_erase, erase_value,
                                          resample)
    return compose(random_resized_crop(size, scale, ratio, resample, draft=jpeg_draft), *([hflip()] if flip else []),
                   *colour, lighting(lighting_std), *erase)


def _alexnet_policy(size: int, *, resize: int | None = None, flip: bool = True, lighting_std: float = 0.1,
                    resample: str = "bilinear") -> Transform:
    """AlexNet: shorter side to ``resize`` (256 for 224), random ``size`` crop, flip, PCA lighting."""
    resize = resize or round(size * 256 / 224)
    return compose(resize_shorter(resize, resample), random_crop(size), *([hflip()] if flip else []),
                   lighting(lighting_std))


def _vgg_scale_policy(size: int, *, min_size: int = 256, max_size: int = 512, flip: bool = True,
                      lighting_std: float = 0.1, resample: str = "bilinear") -> Transform:
    """VGG scale jitter: shorter side uniform in [min_size, max_size], random ``size`` crop, flip, PCA lighting."""
    return compose(random_resize_shorter(min_size, max_size, resample), random_crop(size),
                   *([hflip()] if flip else []), lighting(lighting_std))


def _segmentation_policy(size: int, *, min_scale: float = 0.5, max_scale: float = 2.0, flip: bool = True,
                         ignore_label: int = 255, resample: str = "bilinear") -> Transform:
    """Segmentation: scale jitter, random ``size`` crop (padding the mask with ``ignore_label``), flip."""
    return compose(random_scale(min_scale, max_scale, resample), random_crop(size, ignore_label),
                   *([hflip()] if flip else []))


TRAIN_POLICIES = {"shift": _shift_policy, "inception": _inception_policy, "alexnet": _alexnet_policy,
                  "vgg_scale": _vgg_scale_policy, "segmentation": _segmentation_policy}


def policy_flips(policy: str, **opts) -> bool:
    """Whether the training policy ``policy`` with options ``opts`` applies random horizontal flips."""
    if policy not in TRAIN_POLICIES:
        raise ValueError(f"unknown train policy {policy!r}; valid: {', '.join(TRAIN_POLICIES)}")
    param = inspect.signature(TRAIN_POLICIES[policy]).parameters.get("flip")
    return bool(opts.get("flip", param.default)) if param is not None else False


def _build(kind: str, table: dict, policy: str, size, opts: dict) -> Transform:
    if policy not in table:
        raise ValueError(f"unknown {kind} policy {policy!r}; valid: {', '.join(table)}")
    factory = table[policy]
    valid = [p for p in inspect.signature(factory).parameters if p != "size"]
    if unknown := sorted(set(opts) - set(valid)):
        raise ValueError(f"{kind} policy {policy!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return factory(size, **opts)


def make_train_transform(policy: str, size: int | None, **opts) -> Transform:
    """The training transform of ``policy`` (see ``TRAIN_POLICIES``) producing ``size`` x ``size`` examples."""
    return _build("train", TRAIN_POLICIES, policy, size, opts)


def _center_policy(size: int, *, resize: int | None = None, resample: str = "bilinear") -> Transform:
    """Shorter side to ``resize`` (default ``round(size / 0.875)``, 256 for 224), central ``size`` crop."""
    return compose(resize_shorter(resize or round(size / 0.875), resample), center_crop(size))


def _pad_policy(size: int, *, ignore_label: int = 255, resample: str = "bilinear") -> Transform:
    """Segmentation: the whole image, shrunk only if larger than ``size``, padded to ``size`` (mask: ignore)."""
    return pad_to(size, ignore_label, resample)


def _identity_policy(size=None) -> Transform:
    """Examples unchanged (already fixed size, e.g. digits)."""
    return lambda example, rng: example


EVAL_POLICIES = {"center": _center_policy, "pad": _pad_policy, "none": _identity_policy}


def make_eval_transform(size: int | None, policy: str = "center", **opts) -> Transform:
    """The deterministic evaluation transform of ``policy`` (see ``EVAL_POLICIES``)."""
    return _build("eval", EVAL_POLICIES, policy, size, opts)


def resize_center_crop(size: int, resize: int | None = None) -> Transform:
    """Evaluation crop: shorter side to ``resize`` (default ``round(size / 0.875)``), central ``size`` crop."""
    return _center_policy(size, resize=resize)


__all__: Sequence[str] = [
    "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "EVAL_POLICIES", "TRAIN_POLICIES", "center_crop", "compose", "decoded",
    "hflip", "lighting", "lighting_offset", "make_eval_transform", "make_train_transform", "pad_to", "policy_flips",
    "random_crop", "random_resize_shorter", "random_resized_crop", "random_resized_crop_params", "random_scale",
    "reads_encoded", "resize_center_crop", "resize_shorter", "translate",
]
