"""Dreaming: class visualization, DeepDream and feature inversion, built on ``InputOptimizer``.

class visualization (Simonyan et al. 2014; "inceptionism"): from noise, ascend
  one class score per image under a spatial regulariser; one call renders a
  batch of classes at once.
DeepDream (Mordvintsev et al. 2015): amplify a layer's activations on a
  photo, octave by octave (small to large), with jitter, normalised steps,
  and the detail found at each octave carried up to the next.
feature inversion (Mahendran & Vedaldi 2015): from noise, find an image
  whose activations at a layer match a target image's, with total variation.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.imagenet import preprocess

from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt.optimize import InputOptimizer, Result, evaluate
from jaxcnn.inputopt.problem import check_images01
from jaxcnn.inputopt.transforms import Jitter, standard_transforms


def visualize_classes(model, variables, labels: Sequence[int], *, size: int = 224, steps: int = 256,
                      learning_rate: float = 0.05, param: str = "fourier", tv_weight: float = 0.0,
                      l2_weight: float = 0.0, score: str = "logit", transforms: Sequence | None = None,
                      key: int = 0, progress: bool = False) -> Result:
    """One image per label (B = len(labels)), each ascending its own class score.

    score: ``logit`` (Simonyan et al.: unnormalised score, so the image is not
    rewarded for suppressing other classes) or ``logprob``. Regularisers:
    ``tv_weight`` * total variation and ``l2_weight`` * L2 are subtracted.
    transforms: robustness transforms; default ``standard_transforms(size)``.
    """
    if score not in ("logit", "logprob"):
        raise ValueError(f"unknown score {score!r}; valid: logit, logprob")
    labels = jnp.asarray(labels, jnp.int32).reshape(-1)
    target = O.class_logit(labels) if score == "logit" else O.class_logprob(labels)
    objective = target
    if tv_weight:
        objective = objective - tv_weight * O.total_variation()
    if l2_weight:
        objective = objective - l2_weight * O.l2()
    opt = InputOptimizer(model, variables, steps=steps, learning_rate=learning_rate, param=param,
                         transforms=standard_transforms(size) if transforms is None else transforms)
    return opt.run(objective, (len(labels), size, size), key=key, progress=progress)


def _resize(x, h: int, w: int):
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), method="linear")


def deepdream(model, variables, images, layer: str, *, octaves: int = 4, octave_scale: float = 1.4,
              steps_per_octave: int = 10, learning_rate: float = 0.01, jitter: int = 16,
              key: int = 0, progress: bool = False) -> jax.Array:
    """Dreams on ``images`` (B, H, W, 3) in [0, 1] at ``layer``; returns the dreamed images, same shape.

    Octave i works on the photo scaled by ``octave_scale ** -(octaves - 1 - i)``;
    the detail added at one octave is upsampled and added to the next.
    Smaller octaves that would fall under 8 px are skipped.
    """
    check_images01(images)
    images = jnp.asarray(images, jnp.float32)
    b, h, w, _ = images.shape
    sizes = [(round(h / octave_scale ** i), round(w / octave_scale ** i)) for i in reversed(range(octaves))]
    sizes = [s for s in sizes if min(s) >= 8]
    opt = InputOptimizer(model, variables, steps=steps_per_octave, optimizer="normalized_sgd",
                         learning_rate=learning_rate, transforms=(Jitter(jitter),))
    objective = O.layer_l2(layer)
    detail = jnp.zeros((b, *sizes[0], 3))
    for i, (oh, ow) in enumerate(sizes):
        base = _resize(images, oh, ow)
        detail = _resize(detail, oh, ow)
        start = jnp.clip(base + detail, 0.0, 1.0)
        result = opt.run(objective, start, key=key + i, progress=progress)
        detail = result.images - base
    return result.images


@dataclasses.dataclass
class ImageChange:
    """What an optimisation did to its images: the objective per image before and after, the largest
    pixel change per image in 0-255 levels, and whether any image moved by at least one level."""

    before: np.ndarray
    after: np.ndarray
    max_change: np.ndarray

    @property
    def moved(self) -> bool:
        return bool(np.any(self.max_change >= 1.0))


def image_change(model, variables, objective, start, end) -> ImageChange:
    """The objective on ``start`` and ``end`` (B, H, W, 3) in [0, 1] and the largest change per image (0-255)."""
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    delta = np.abs(end - start).reshape(len(start), -1).max(axis=1) * 255
    return ImageChange(evaluate(model, variables, objective, start), evaluate(model, variables, objective, end), delta)


def dream_change(model, variables, images, dreamed, layer: str) -> ImageChange:
    """DeepDream's objective (``layer``'s mean squared activation) before and after, and the pixel change."""
    return image_change(model, variables, O.layer_l2(layer), images, dreamed)


def invert(model, variables, images, layer: str, *, steps: int = 300, learning_rate: float = 0.05,
           tv_weight: float = 1e-2, param: str = "pixels", key: int = 0,
           progress: bool = False) -> tuple[Result, np.ndarray, np.ndarray]:
    """Reconstructs ``images`` (B, H, W, 3) in [0, 1] from their activations at ``layer``, starting from noise.

    Returns (result, distance at the start, distance at the end), where the
    distance is ||f(x) - f(x0)||^2 / ||f(x0)||^2 per image.
    """
    check_images01(images)
    images = jnp.asarray(images, jnp.float32)
    _, features = model.apply(variables, preprocess(images), train=False)
    if layer not in features:
        raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(features)}")
    match = O.match_activations(layer, features[layer])
    opt = InputOptimizer(model, variables, steps=steps, learning_rate=learning_rate, param=param)
    result = opt.run(match - tv_weight * O.total_variation(), images.shape[:3], key=key, progress=progress)
    before = -evaluate(model, variables, match, result.start)
    after = -evaluate(model, variables, match, result.images)
    return result, before, after
