"""Looking inside: saliency, deconvnet, guided backprop, integrated gradients, SmoothGrad, occlusion.

Gradient methods differ only in how a ReLU passes the signal back:
  saliency   the true gradient (Simonyan et al. 2014): g * (x > 0)
  deconvnet  Zeiler & Fergus 2014: relu(g), ignoring the forward mask; max-pools
             route the signal through the switches recorded in the forward pass (the
             VJP of a max-pool *is* the switch routing) and convolutions run
             transposed (the VJP of a convolution), so this reproduces the deconvnet
  guided     Springenberg et al. 2015: relu(g) * (x > 0)
The model code is untouched: the forward function is traced to a jaxpr and
re-evaluated with every ``relu`` replaced by a ReLU carrying the chosen VJP.

A *unit* is any ``jaxcnn.inputopt.objectives`` objective (``neuron``,
``channel``, ``class_logit`` ...), so the same objects name what to explain
and what to optimise. Integrated gradients and SmoothGrad sum gradients over
a path or over noise with ``problem.Ascent`` (one compiled gradient per call
on the CPU fast path, one ``lax.scan`` elsewhere).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import problem
from jaxcnn.inputopt.objectives import Objective

METHODS = ("saliency", "deconvnet", "guided")


def _modified_relu(mode: str):
    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0)

    def fwd(x):
        return relu(x), x

    def bwd(x, g):
        back = jnp.maximum(g, 0)
        return (back if mode == "deconvnet" else back * (x > 0),)

    relu.defvjp(fwd, bwd)
    return relu


def _is_relu(eqn) -> bool:
    if eqn.primitive.name != "custom_jvp_call":
        return False
    inner = eqn.params["call_jaxpr"].jaxpr.eqns
    return len(inner) == 1 and inner[0].params.get("name") == "relu"


def _has_relu(jaxpr) -> bool:
    """Whether ``jaxpr`` calls a ReLU, directly or in a nested call."""
    for eqn in jaxpr.eqns:
        if _is_relu(eqn):
            return True
        for sub in jcore.jaxprs_in_params(eqn.params):
            if _has_relu(sub):
                return True
    return False


def eval_jaxpr(jaxpr, consts, args, relu=None, perturb=None):
    """Evaluates ``jaxpr`` with each ReLU call replaced by ``relu`` (recursing into nested jits; None: every
    call as it is) and, with ``perturb`` = (a variable of ``jaxpr``, delta), delta added to that variable
    where it is made (Grad-CAM's derivative with respect to a layer's output)."""
    env = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]

    def write(var, val):
        env[var] = val + perturb[1] if perturb is not None and var is perturb[0] else val

    for var, val in zip(jaxpr.constvars, consts):
        write(var, val)
    for var, val in zip(jaxpr.invars, args):
        write(var, val)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if relu is not None and _is_relu(eqn):
            outs = [relu(invals[0])]
        elif relu is not None and eqn.primitive.name in ("jit", "pjit"):
            sub = eqn.params["jaxpr"]
            outs = eval_jaxpr(sub.jaxpr, sub.consts, invals, relu)
        elif (relu is not None and eqn.primitive.name in ("custom_jvp_call", "custom_vjp_call")
              and _has_relu(eqn.params["call_jaxpr"].jaxpr)):
            sub = eqn.params["call_jaxpr"]
            outs = eval_jaxpr(sub.jaxpr, sub.consts, invals, relu)
        else:   # any other op, custom-derivative functions without a ReLU (the CPU max pool and convolutions
            # of ``jaxcnn.cpu``) included: bound as they are, with their own derivative rules
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for var, val in zip(eqn.outvars, outs):
            write(var, val)
    return [read(v) for v in jaxpr.outvars]


def _score_fn(model, variables, unit: Objective):
    def score(x):
        logits, features = model.apply(variables, preprocess(x), train=False)
        return jnp.sum(unit({"features": features, "logits": logits, "image": x}))
    return score


def input_gradient(model, variables, images, unit: Objective, method: str = "saliency") -> jax.Array:
    """d unit / d image for images (B, H, W, 3) in [0, 1] -> (B, H, W, 3), with ``method``'s ReLU rule."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    x = problem.check_unit(model, variables, images, unit)
    return _gradient(model, variables, x, unit, method)


@functools.partial(cpu.jit, static_argnames=("model", "method"))
def _gradient(model, variables, x, unit, method):
    score = _score_fn(model, variables, unit)
    if method == "saliency":
        return jax.grad(score)(x)
    closed = jax.make_jaxpr(score)(x)
    relu = _modified_relu(method)
    return jax.grad(lambda x: eval_jaxpr(closed.jaxpr, closed.consts, [x], relu)[0])(x)


def saliency_map(grad) -> np.ndarray:
    """(B, H, W, 3) gradients -> (B, H, W) max over channels of |gradient| (Simonyan et al.)."""
    return np.max(np.abs(np.asarray(grad)), axis=-1)


def integrated_gradients(model, variables, images, unit: Objective, *, baseline=None, steps: int = 64) -> jax.Array:
    """Sundararajan et al. 2017: (x - x0) * mean gradient on the straight path x0 -> x (midpoint rule).

    Completeness: attributions sum to about unit(x) - unit(x0); baseline
    defaults to a black image.
    """
    x = problem.check_unit(model, variables, images, unit)
    x0 = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, jnp.float32), x.shape)
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
    total, _ = _ig_loop((variables, x, x0, unit), jnp.zeros_like(x), alphas, model=model)
    return (x - x0) * total / steps


def _ig_step(consts, total, alpha, *, model):
    variables, x, x0, unit = consts
    return total + jax.grad(_score_fn(model, variables, unit))(x0 + alpha * (x - x0)), None


_ig_loop = problem.Ascent(_ig_step)


def smoothgrad(model, variables, images, unit: Objective, *, samples: int = 32, sigma: float = 0.15,
               key: int = 0) -> jax.Array:
    """Smilkov et al. 2017: the mean gradient over ``samples`` copies with N(0, sigma^2) pixel noise."""
    x = problem.check_unit(model, variables, images, unit)
    keys = jax.random.split(jax.random.key(key), samples)
    total, _ = _smooth_loop((variables, x, unit, jnp.float32(sigma)), jnp.zeros_like(x), keys, model=model)
    return total / samples


def _smooth_step(consts, total, k, *, model):
    variables, x, unit, sigma = consts
    return total + jax.grad(_score_fn(model, variables, unit))(x + sigma * jax.random.normal(k, x.shape)), None


_smooth_loop = problem.Ascent(_smooth_step)


# ---------------------------------------------------------------- occlusion (Zeiler & Fergus)
def occlusion_positions(h: int, w: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (ys, xs) of an occluder of ``size`` moved by ``stride`` over an h x w image."""
    if stride <= 0:
        raise ValueError(f"occluder stride must be > 0, got {stride}")
    if size <= 0 or size > min(h, w):
        raise ValueError(f"occluder size {size} must be in 1..{min(h, w)} for a {h}x{w} image")
    return np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride)


def occlusion(model, variables, image, label: int, *, size: int, stride: int, fill: float = 0.5,
              batch: int = 64) -> np.ndarray:
    """p(label) with a grey ``size`` x ``size`` square at each position: (ny, nx) map for one (H, W, 3) image.

    All positions run as batched compiled forwards of ``batch`` occluded copies.
    """
    problem.check_images01(np.asarray(image)[None])
    h, w, _ = np.shape(image)
    ys, xs = occlusion_positions(h, w, size, stride)
    corners = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2).astype(np.int32)
    n = len(corners)
    pad = (-n) % batch
    corners = np.concatenate([corners, np.repeat(corners[-1:], pad, 0)])
    image = jnp.asarray(image, jnp.float32)
    probs = [_occluded_probs(model, variables, image, jnp.asarray(corners[i:i + batch]), jnp.int32(label),
                             jnp.float32(fill), size=size) for i in range(0, len(corners), batch)]
    return np.concatenate([np.asarray(p) for p in probs])[:n].reshape(len(ys), len(xs))


@functools.partial(cpu.jit, static_argnames=("model", "size"))
def _occluded_probs(model, variables, image, corners, label, fill, *, size):
    h, w, _ = image.shape
    yy, xx = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    cy, cx = corners[:, 0, None, None], corners[:, 1, None, None]
    inside = (yy >= cy) & (yy < cy + size) & (xx >= cx) & (xx < cx + size)
    x = jnp.where(inside[..., None], fill, image[None])
    return jax.nn.softmax(problem.logits(model, variables, x), axis=-1)[:, label]
