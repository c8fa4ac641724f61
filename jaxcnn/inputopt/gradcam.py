"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017) at any spatial layer of ``features``.

Grad-CAM weighs each channel k of a layer's activations A (B, h, w, K) by the spatial mean of the
unit's gradient there and sums over channels:

    alpha_k = mean_ij d unit / d A_ijk,      map = ReLU(sum_k alpha_k A_k)      (B, h, w)

(Captum's ``LayerGradCam``; its ``relu_attributions=False`` default is ``relu=False`` here). Guided
Grad-CAM multiplies guided backprop's input gradient (``attribution.input_gradient(..., "guided")``)
by the ReLU'd map upsampled to the input (nearest neighbour, as Captum's ``GuidedGradCam``).

The gradient with respect to an activation inside the network is taken without touching the model:
the forward function (``preprocess``, the model, the unit) is traced to a jaxpr that also returns
``features[layer]``, and evaluated again with a perturbation added to that activation where it is
made (``attribution.eval_jaxpr``); the derivative at a zero perturbation is d unit / d A. A unit is any objective
(``class_logit`` for the paper's class maps), as for the other attributions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import problem
from jaxcnn.inputopt.attribution import eval_jaxpr, input_gradient
from jaxcnn.inputopt.objectives import Objective

UPSAMPLING = ("nearest", "bilinear")


def spatial_layers(model, variables, image_shape) -> list[str]:
    """The names of ``features`` entries that are (B, h, w, C) maps at ``image_shape``, in the order the
    model makes them (a traced function sees the dict as built; pytrees come back with sorted keys)."""
    order = []

    def forward(v, x):
        features = model.apply(v, x, train=False)[1]
        order.extend(k for k, f in features.items() if f.ndim == 4)
        return ()

    jax.eval_shape(forward, variables, jax.ShapeDtypeStruct((1, *tuple(image_shape)[1:]), jnp.float32))
    return order


def default_layer(model, variables, image_shape) -> str:
    """The last spatial layer (the paper's choice: the last convolutional maps)."""
    layers = spatial_layers(model, variables, image_shape)
    if not layers:
        raise ValueError("the model has no spatial (B, h, w, C) feature for Grad-CAM")
    return layers[-1]


def _check_layer(model, variables, x, layer: str) -> None:
    _, features = problem.feature_shapes(model, variables, x.shape)
    if layer not in features:
        raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(features)}")
    if len(features[layer].shape) != 4:
        raise ValueError(f"Grad-CAM needs a spatial (B, h, w, C) layer; {layer} is {tuple(features[layer].shape)} "
                         f"(spatial layers: {', '.join(spatial_layers(model, variables, x.shape))})")


def layer_gradient(model, variables, images, unit: Objective, layer: str) -> tuple[jax.Array, jax.Array]:
    """``(A, d unit / d A)`` at ``features[layer]`` for images (B, H, W, 3) in [0, 1]: two (B, h, w, C) float32."""
    x = problem.check_unit(model, variables, images, unit)
    _check_layer(model, variables, x, layer)
    return _layer_gradient(model, variables, x, unit, layer=layer)


@functools.partial(cpu.jit, static_argnames=("model", "layer"))
def _layer_gradient(model, variables, x, unit, *, layer):
    def forward(x):
        logits, features = model.apply(variables, preprocess(x), train=False)
        return jnp.sum(unit({"features": features, "logits": logits, "image": x})), features[layer]

    closed = jax.make_jaxpr(forward)(x)
    target = closed.jaxpr.outvars[1]
    if not any(v is target for eqn in closed.jaxpr.eqns for v in eqn.invars):
        raise ValueError(f"the unit does not depend on {layer} (nothing after it leads to the score)")

    def score(delta):
        value, acts = eval_jaxpr(closed.jaxpr, closed.consts, [x], perturb=(target, delta))
        return value, acts

    grads, acts = jax.grad(score, has_aux=True)(jnp.zeros(target.aval.shape, target.aval.dtype))
    return acts.astype(jnp.float32), grads.astype(jnp.float32)


def grad_cam(model, variables, images, unit: Objective, layer: str, *, relu: bool = True) -> np.ndarray:
    """Grad-CAM maps (B, h, w) at ``layer``'s resolution for images (B, H, W, 3) in [0, 1].

    ``relu=False`` keeps the negative evidence (Captum's ``LayerGradCam`` default).
    """
    acts, grads = layer_gradient(model, variables, images, unit, layer)
    cam = np.einsum("bhwk,bk->bhw", np.asarray(acts, np.float64), np.asarray(grads, np.float64).mean(axis=(1, 2)))
    return np.maximum(cam, 0).astype(np.float32) if relu else cam.astype(np.float32)


def upsample(maps, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """(B, h, w) maps -> (B, H, W): ``nearest`` as ``torch.nn.functional.interpolate`` (source row
    floor(i * h / H)), or ``bilinear`` (half-pixel centres, no corner alignment)."""
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {mode!r}; valid: {', '.join(UPSAMPLING)}")
    maps = np.asarray(maps, np.float32)
    (h, w), (out_h, out_w) = maps.shape[1:], size
    if mode == "bilinear":
        return np.asarray(jax.image.resize(maps, (maps.shape[0], out_h, out_w), "bilinear", antialias=False))
    index = lambda n, out: np.minimum(np.floor(np.arange(out, dtype=np.float32) * (np.float32(n) / np.float32(out)))
                                      .astype(int), n - 1)      # torch's float32 arithmetic
    rows, cols = index(h, out_h), index(w, out_w)
    return maps[:, rows][:, :, cols]


def guided_grad_cam(model, variables, images, unit: Objective, layer: str, *, mode: str = "nearest") -> np.ndarray:
    """Guided Grad-CAM (B, H, W, 3): guided backprop's input gradient times the ReLU'd Grad-CAM map of
    ``layer`` upsampled to the image (``mode``), the same for the three channels."""
    cam = upsample(grad_cam(model, variables, images, unit, layer, relu=True), np.shape(images)[1:3], mode)
    return np.asarray(input_gradient(model, variables, images, unit, "guided")) * cam[..., None]
