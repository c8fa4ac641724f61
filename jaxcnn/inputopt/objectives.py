"""Objectives: per-image scores to *maximise*, read from a model's ``features`` dict.

An ``Objective`` is a weighted sum of terms. A term is a kind (a function
in ``KINDS``), static settings (a layer name, a channel index) and array
parameters (labels, target activations, target Gram matrices). Objectives
add, subtract and scale::

    obj = class_logit(labels) - 1e-3 * total_variation() - 1e-4 * l2()

Objectives are pytrees whose leaves are the array parameters and weights, so
the compiled optimisation loop is reused for new targets and weights of the
same shapes; only a different *structure* (other kinds, layers) recompiles.

Every term sees a context ``{"features", "logits", "image"}``: the model's
features and logits for the (transformed) input, and the untransformed image
in pixel space [0, 1] (regularisers act on it). Each returns a (B,) score.
Losses (style, content, matching) are returned negated, so every objective
is ascended.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.imagenet import preprocess

Context = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Term:
    kind: str
    static: tuple              # hashable settings (layer name, channel, ...)
    params: Any                # arrays (traced)
    weight: Any = 1.0


@jax.tree_util.register_pytree_node_class
class Objective:
    """A weighted sum of terms; ``objective(ctx)`` -> (B,) float32 scores."""

    def __init__(self, terms: tuple[Term, ...]):
        self.terms = tuple(terms)

    def __call__(self, ctx: Context) -> jax.Array:
        total = 0.0
        for t in self.terms:
            total = total + t.weight * KINDS[t.kind](ctx, t.params, *t.static)
        return total

    @property
    def layers(self) -> tuple[str, ...]:
        """The feature names this objective reads (checked against the model before compiling)."""
        return tuple(dict.fromkeys(t.static[0] for t in self.terms if t.kind in LAYER_KINDS))

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __mul__(self, scale) -> "Objective":
        if isinstance(scale, Objective):
            return NotImplemented
        return Objective(tuple(dataclasses.replace(t, weight=t.weight * scale) for t in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)

    def __repr__(self) -> str:
        return " + ".join(f"{t.weight}*{t.kind}{t.static}" for t in self.terms)

    def tree_flatten(self):
        return [(t.params, t.weight) for t in self.terms], tuple((t.kind, t.static) for t in self.terms)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(tuple(Term(k, s, p, w) for (k, s), (p, w) in zip(aux, children)))


def _wide(x) -> jax.Array:
    """At least float32 (bfloat16 activations are promoted; float64 stays float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _per_image(x: jax.Array) -> jax.Array:
    return _wide(x).reshape(x.shape[0], -1)


def _labels(labels, batch: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (batch,))


def gram(f: jax.Array) -> jax.Array:
    """Gram matrices of (B, H, W, C) activations: (B, C, C) = F^T F / (H W), at least float32."""
    f = _wide(f)
    flat = f.reshape(f.shape[0], -1, f.shape[-1])
    return layers.gram(flat) / flat.shape[1]


# ---------------------------------------------------------------- kinds: ctx, params, *static -> (B,)
def _class_logit(ctx, labels):
    logits = _wide(ctx["logits"])
    return jnp.take_along_axis(logits, _labels(labels, logits.shape[0])[:, None], axis=1)[:, 0]


def _class_logprob(ctx, labels):
    logp = jax.nn.log_softmax(_wide(ctx["logits"]))
    return jnp.take_along_axis(logp, _labels(labels, logp.shape[0])[:, None], axis=1)[:, 0]


def _channel(ctx, channels, layer):
    f = _wide(ctx["features"][layer])
    mean = jnp.mean(f, axis=tuple(range(1, f.ndim - 1)))  # (B, C)
    return jnp.take_along_axis(mean, _labels(channels, f.shape[0])[:, None], axis=1)[:, 0]


def _neuron(ctx, channels, layer, y, x):
    f = _wide(ctx["features"][layer])
    if f.ndim == 4:
        f = f[:, f.shape[1] // 2 if y is None else y, f.shape[2] // 2 if x is None else x]
    return jnp.take_along_axis(f, _labels(channels, f.shape[0])[:, None], axis=1)[:, 0]


def _layer_l2(ctx, _, layer):
    return jnp.mean(jnp.square(_per_image(ctx["features"][layer])), axis=1)


def _match(ctx, target, layer):
    f = _per_image(ctx["features"][layer])
    t = _per_image(jnp.broadcast_to(target, ctx["features"][layer].shape))
    return -jnp.sum(jnp.square(f - t), axis=1) / jnp.maximum(jnp.sum(jnp.square(t), axis=1), 1e-12)


def _content(ctx, target, layer):
    f = _per_image(ctx["features"][layer])
    t = _per_image(jnp.broadcast_to(target, ctx["features"][layer].shape))
    return -0.5 * jnp.sum(jnp.square(f - t), axis=1)


def _gram_match(ctx, target_gram, layer):
    g = gram(ctx["features"][layer])
    c = g.shape[-1]
    return -jnp.sum(jnp.square(g - target_gram).reshape(g.shape[0], -1), axis=1) / (4.0 * c * c)


def _total_variation(ctx, _, beta):
    x = _wide(ctx["image"])
    dy = x[:, 1:, :-1] - x[:, :-1, :-1]
    dx = x[:, :-1, 1:] - x[:, :-1, :-1]
    return -jnp.mean(_per_image(jnp.power(dx * dx + dy * dy + 1e-8, beta / 2.0)), axis=1)


def _l2(ctx, _):
    return -jnp.mean(jnp.square(_per_image(preprocess(ctx["image"]))), axis=1)


def box_blur(x: jax.Array) -> jax.Array:
    """3x3 mean filter of (B, H, W, C) images with edge padding."""
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _blur(ctx, _):
    x = _wide(ctx["image"])
    return -jnp.mean(jnp.square(_per_image(x - box_blur(x))), axis=1)


KINDS: dict[str, Callable[..., jax.Array]] = {
    "class_logit": _class_logit, "class_logprob": _class_logprob, "channel": _channel, "neuron": _neuron,
    "layer_l2": _layer_l2, "match": _match, "content": _content, "gram_match": _gram_match,
    "total_variation": _total_variation, "l2": _l2, "blur": _blur,
}
LAYER_KINDS = frozenset({"channel", "neuron", "layer_l2", "match", "content", "gram_match"})


# ---------------------------------------------------------------- constructors
def class_logit(labels) -> Objective:
    """The logit of ``labels`` (an int, or (B,) one per image)."""
    return Objective((Term("class_logit", (), jnp.asarray(labels, jnp.int32)),))


def class_logprob(labels) -> Objective:
    """log softmax probability of ``labels`` (an int, or (B,))."""
    return Objective((Term("class_logprob", (), jnp.asarray(labels, jnp.int32)),))


def channel(layer: str, index) -> Objective:
    """Spatial mean of channel ``index`` (an int, or (B,)) of ``layer``."""
    return Objective((Term("channel", (layer,), jnp.asarray(index, jnp.int32)),))


def neuron(layer: str, index, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel ``index`` of ``layer`` at (y, x) (default: the centre)."""
    return Objective((Term("neuron", (layer, y, x), jnp.asarray(index, jnp.int32)),))


def layer_l2(layer: str) -> Objective:
    """Mean squared activation of ``layer`` (DeepDream's objective)."""
    return Objective((Term("layer_l2", (layer,), ()),))


def match_activations(layer: str, target) -> Objective:
    """-||f - t||^2 / ||t||^2 at ``layer`` (feature inversion; ``target`` (B or 1, ...) activations)."""
    return Objective((Term("match", (layer,), jnp.asarray(target, jnp.float32)),))


def content(layer: str, target) -> Objective:
    """Gatys et al.'s content loss, negated: -1/2 sum (F - P)^2 at ``layer``."""
    return Objective((Term("content", (layer,), jnp.asarray(target, jnp.float32)),))


def gram_match(layer: str, target_gram) -> Objective:
    """Gatys et al.'s style loss E_l of one layer, negated: -sum (G - A)^2 / (4 C^2), G = F^T F / (H W)."""
    return Objective((Term("gram_match", (layer,), jnp.asarray(target_gram, jnp.float32)),))


def total_variation(beta: float = 2.0) -> Objective:
    """Spatial regulariser, negated: -mean (dx^2 + dy^2)^(beta/2) over the pixel-space image."""
    return Objective((Term("total_variation", (float(beta),), ()),))


def l2() -> Objective:
    """-mean of the squared normalized image (Simonyan et al.'s L2 regulariser)."""
    return Objective((Term("l2", (), ()),))


def blur() -> Objective:
    """-mean (x - blur3x3(x))^2: penalises high frequencies."""
    return Objective((Term("blur", (), ()),))
