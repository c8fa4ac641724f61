"""Gatys et al.'s artistic style transfer ("A Neural Algorithm of Artistic Style", 2015).

The image x minimises  content_weight * L_content + style_weight * L_style  where
  L_content = 1/2 sum (F(x) - F(content))^2 at one deep layer (VGG-19 conv4_2), and
  L_style   = sum_l w_l E_l,  E_l = sum (G_l(x) - A_l)^2 / (4 C_l^2),  G_l = F_l^T F_l / (H_l W_l),
over several layers (conv1_1 ... conv5_1, equal weights). Several style
images blend by weighting their Gram matrices (the loss against the blend
equals the weighted loss against each, up to a constant). Optional colour
preservation keeps the content's colours: the result's luminance with the
content image's chrominance (YIQ), as in Gatys et al. 2016.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import objectives as O
from jaxcnn.inputopt.optimize import InputOptimizer, Result, evaluate
from jaxcnn.inputopt.problem import check_images01

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)


def preserve_colors(result, content):
    """The luminance (Y) of ``result`` with the chrominance (I, Q) of ``content``; both (..., H, W, 3) in [0, 1]."""
    to_yiq = jnp.asarray(_YIQ.T)
    y = jnp.asarray(result) @ to_yiq
    c = jnp.asarray(content) @ to_yiq
    mixed = jnp.concatenate([y[..., :1], c[..., 1:]], axis=-1)
    return jnp.clip(mixed @ jnp.asarray(np.linalg.inv(_YIQ).T), 0.0, 1.0)


@dataclasses.dataclass
class StyleResult:
    """images (1, H, W, 3) in [0, 1]; content/style losses (unweighted) at the start and the end;
    max_change: the largest pixel change from the starting image, in 0-255 levels."""

    images: jnp.ndarray
    content_loss: tuple[float, float]
    style_loss: tuple[float, float]
    result: Result
    max_change: float = float("nan")


def style_objectives(model, variables, content, styles: Sequence, *, style_blend: Sequence[float] | None = None,
                     content_layer: str = CONTENT_LAYER, style_layers: Sequence[str] = STYLE_LAYERS):
    """(content objective, style objective) for a content image (H, W, 3) and style images (each any size)."""
    check_images01(jnp.asarray(content)[None], "content image")
    if not styles:
        raise ValueError("style transfer needs at least one style image")
    blend = np.ones(len(styles)) if style_blend is None else np.asarray(style_blend, np.float64)
    if blend.shape != (len(styles),) or np.any(blend < 0) or blend.sum() <= 0:
        raise ValueError(f"style_blend needs {len(styles)} non-negative weights, got {list(blend)}")
    blend = blend / blend.sum()
    _, feats = model.apply(variables, preprocess(jnp.asarray(content, jnp.float32)[None]), train=False)
    for layer in (content_layer, *style_layers):
        if layer not in feats:
            raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(feats)}")
    content_obj = O.content(content_layer, feats[content_layer])
    grams = {layer: 0.0 for layer in style_layers}
    for weight, style in zip(blend, styles):
        check_images01(jnp.asarray(style)[None], "style image")
        _, sf = model.apply(variables, preprocess(jnp.asarray(style, jnp.float32)[None]), train=False)
        for layer in style_layers:
            grams[layer] = grams[layer] + float(weight) * O.gram(sf[layer])
    style_obj = sum((O.gram_match(layer, grams[layer]) * (1.0 / len(style_layers)) for layer in style_layers[1:]),
                    O.gram_match(style_layers[0], grams[style_layers[0]]) * (1.0 / len(style_layers)))
    return content_obj, style_obj


def style_transfer(model, variables, content, styles: Sequence, *, style_blend: Sequence[float] | None = None,
                   content_weight: float = 1.0, style_weight: float = 1e3, tv_weight: float = 0.0,
                   content_layer: str = CONTENT_LAYER, style_layers: Sequence[str] = STYLE_LAYERS,
                   init: str = "content", optimizer: str = "lbfgs", learning_rate: float = 0.02,
                   steps: int = 200, preserve_color: bool = False, key: int = 0,
                   progress: bool = False) -> StyleResult:
    """Renders ``content`` (H, W, 3) in [0, 1] in the style of ``styles``; see the module docstring."""
    if init not in ("content", "noise"):
        raise ValueError(f"unknown init {init!r}; valid: content, noise")
    content = jnp.asarray(content, jnp.float32)
    content_obj, style_obj = style_objectives(model, variables, content, styles, style_blend=style_blend,
                                              content_layer=content_layer, style_layers=style_layers)
    objective = content_weight * content_obj + style_weight * style_obj
    if tv_weight:
        objective = objective - tv_weight * O.total_variation()
    opt = InputOptimizer(model, variables, steps=steps, optimizer=optimizer, learning_rate=learning_rate)
    start = content[None] if init == "content" else (1,) + content.shape[:2]
    result = opt.run(objective, start, key=key, progress=progress)
    images = preserve_colors(result.images, content[None]) if preserve_color else result.images
    losses = lambda obj: tuple(float(-evaluate(model, variables, obj, x)[0]) for x in (result.start, result.images))
    change = float(np.max(np.abs(np.asarray(result.images) - np.asarray(result.start)))) * 255
    return StyleResult(images, losses(content_obj), losses(style_obj), result, change)
