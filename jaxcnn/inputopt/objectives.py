"""Objectives: per-image scores to *maximise*, read from a model's ``features`` dict.

An ``Objective`` is a weighted sum of terms. A term is a kind (a function
in ``KINDS``), static settings (a layer name, a channel index) and array
parameters (labels, target activations, target Gram matrices). Objectives
add, subtract, scale, multiply and divide, each other and by numbers::

    obj = class_logit(labels) - 1e-3 * total_variation() - 1e-4 * l2()
    obj = channel("mixed4a", 97) * channel("mixed4a", 143) + 1e2 * diversity("mixed4a")

A product or quotient of two objectives is one term whose parameters are the
two objectives (so it nests, and stays a pytree); a number in a sum is a
``constant`` term.

Objectives are pytrees whose leaves are the array parameters and weights, so
the compiled optimisation loop is reused for new targets and weights of the
same shapes; only a different *structure* (other kinds, layers) recompiles.

Every term sees a context ``{"features", "logits", "image"}``: the model's
features and logits for the (transformed) input, and the untransformed image
in pixel space [0, 1] (regularisers act on it). Each returns a (B,) score.
Losses (style, content, matching) are returned negated, so every objective
is ascended.

The objectives of lucid's algebra that couple the images of a batch
(``channel_interpolate``, ``diversity``, ``alignment``) return a (B,) vector
whose sum is lucid's scalar (up to the sign convention stated in each); those
that lucid averages over the batch (``direction``) are per image, as
``channel`` is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

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

    def flat_terms(self):
        """Every term, those inside products and quotients included (what the model checks read)."""
        for t in self.terms:
            if t.kind in COMPOSITE_KINDS:
                for sub in t.params:
                    yield from sub.flat_terms()
            else:
                yield t

    @property
    def layers(self) -> tuple[str, ...]:
        """The feature names this objective reads (checked against the model before compiling)."""
        names = (t.static[i] for t in self.flat_terms() for i in range(LAYER_KINDS.get(t.kind, 0)))
        return tuple(dict.fromkeys(names))

    def __add__(self, other) -> "Objective":
        if _is_number(other):
            other = constant(other)
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    __radd__ = __add__

    def __mul__(self, other) -> "Objective":
        if isinstance(other, Objective):
            return Objective((Term("product", (), (self, other)),))
        return Objective(tuple(dataclasses.replace(t, weight=t.weight * other) for t in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Objective":
        if isinstance(other, Objective):
            return Objective((Term("quotient", (), (self, other)),))
        return self * (1.0 / other)

    def __rtruediv__(self, other) -> "Objective":
        if not _is_number(other):
            return NotImplemented
        return Objective((Term("quotient", (), (constant(other), self)),))

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other) -> "Objective":
        if _is_number(other):
            other = constant(other)
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other) -> "Objective":
        return (-self) + other

    def __repr__(self) -> str:
        def term(t):
            if t.kind in COMPOSITE_KINDS:
                return f"{t.weight}*(({t.params[0]!r}) {'*' if t.kind == 'product' else '/'} ({t.params[1]!r}))"
            return f"{t.weight}*{t.kind}{t.static}"
        return " + ".join(term(t) for t in self.terms)

    def tree_flatten(self):
        return [(t.params, t.weight) for t in self.terms], tuple((t.kind, t.static) for t in self.terms)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(tuple(Term(k, s, p, w) for (k, s), (p, w) in zip(aux, children)))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


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


# ---------------------------------------------------------------- lucid's algebra: directions, batches, composites
def _dot_cossim(f, vec, cossim_pow):
    """lucid's ``_dot_cossim`` without its batch mean: f . vec over channels, times
    max(0.1, cos(f, vec)) ** cossim_pow (cosine with lucid's 1e-4 added to each norm)."""
    dot = jnp.sum(f * vec, axis=-1)
    if cossim_pow == 0:
        return dot
    norm = lambda a: jnp.sqrt(jnp.sum(a * a, axis=-1))
    cos = dot / (1e-4 + norm(f)) / (1e-4 + norm(vec))
    return dot * jnp.maximum(0.1, cos) ** cossim_pow


def _per_image_vec(vec, ndim: int) -> jax.Array:
    """(C,) or (B, C) direction -> broadcastable against (B, ..., C) activations of rank ``ndim``."""
    v = _wide(vec)
    return v.reshape(v.shape[0], *(1,) * (ndim - 2), v.shape[-1]) if v.ndim == 2 else v


def _direction(ctx, vec, layer, cossim_pow):
    f = _wide(ctx["features"][layer])
    return jnp.mean(_dot_cossim(f, _per_image_vec(vec, f.ndim), cossim_pow).reshape(f.shape[0], -1), axis=1)


def _direction_neuron(ctx, vec, layer, y, x, cossim_pow):
    f = _wide(ctx["features"][layer])
    if f.ndim == 4:
        f = f[:, f.shape[1] // 2 if y is None else y, f.shape[2] // 2 if x is None else x]
    return _dot_cossim(f, _per_image_vec(vec, f.ndim), cossim_pow)


def _channel_interpolate(ctx, channels, layer1, layer2):
    a, b = _channel(ctx, channels[0], layer1), _channel(ctx, channels[1], layer2)
    n = a.shape[0]
    w = jnp.arange(n, dtype=a.dtype) / max(n - 1, 1)
    return (1 - w) * a + w * b


def _diversity(ctx, _, layer):
    f = _wide(ctx["features"][layer])
    flat = f.reshape(f.shape[0], -1, f.shape[-1])
    g = layers.gram(flat).reshape(f.shape[0], -1)                                   # F^T F per image
    g = g / jnp.sqrt(jnp.maximum(jnp.sum(g * g, axis=1, keepdims=True), 1e-10))     # tf.nn.l2_normalize
    sim = g @ g.T
    return -(jnp.sum(sim, axis=1) - jnp.diagonal(sim)) / f.shape[0]


def _alignment(ctx, _, layer, decay_ratio):
    f = _per_image(ctx["features"][layer])
    n = f.shape[0]
    out = jnp.zeros((n,), f.dtype)
    for d in range(1, min(5, n)):
        half = 0.5 * jnp.mean(jnp.square(f[d:] - f[:-d]), axis=1) / decay_ratio ** d    # pair (i, i + d)
        out = out.at[:-d].add(half).at[d:].add(half)
    return -out


def _constant(ctx, value):
    return jnp.broadcast_to(_wide(value), (ctx["image"].shape[0],))


def _product(ctx, pair):
    return pair[0](ctx) * pair[1](ctx)


def _quotient(ctx, pair):
    return pair[0](ctx) / pair[1](ctx)


KINDS: dict[str, Callable[..., jax.Array]] = {
    "class_logit": _class_logit, "class_logprob": _class_logprob, "channel": _channel, "neuron": _neuron,
    "layer_l2": _layer_l2, "match": _match, "content": _content, "gram_match": _gram_match,
    "total_variation": _total_variation, "l2": _l2, "blur": _blur,
    "direction": _direction, "direction_neuron": _direction_neuron, "channel_interpolate": _channel_interpolate,
    "diversity": _diversity, "alignment": _alignment, "constant": _constant,
    "product": _product, "quotient": _quotient,
}
# kind -> how many leading static settings are layer names
LAYER_KINDS: dict[str, int] = {
    "channel": 1, "neuron": 1, "layer_l2": 1, "match": 1, "content": 1, "gram_match": 1,
    "direction": 1, "direction_neuron": 1, "channel_interpolate": 2, "diversity": 1, "alignment": 1,
}
COMPOSITE_KINDS = frozenset({"product", "quotient"})


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


def constant(value) -> Objective:
    """The number ``value`` for every image (what a number in a sum of objectives becomes)."""
    return Objective((Term("constant", (), jnp.asarray(value, jnp.float32)),))


def direction(layer: str, vec, cossim_pow: float = 0) -> Objective:
    """lucid's ``direction``: the spatial mean of f . vec at ``layer``, per image; ``vec`` (C,) or (B, C).

    With ``cossim_pow`` > 0 each position's dot product is weighted by max(0.1, cos)^cossim_pow, the
    cosine between the activation vector and ``vec``, which favours pointing along ``vec`` over size.
    """
    return Objective((Term("direction", (layer, float(cossim_pow)), jnp.asarray(vec, jnp.float32)),))


def direction_neuron(layer: str, vec, y: int | None = None, x: int | None = None,
                     cossim_pow: float = 0) -> Objective:
    """lucid's ``direction_neuron``: f . vec at one position (y, x) of ``layer`` (default: the centre,
    H // 2, W // 2, as ``neuron``); ``vec`` (C,) or (B, C); ``cossim_pow`` as in ``direction``."""
    return Objective((Term("direction_neuron", (layer, y, x, float(cossim_pow)), jnp.asarray(vec, jnp.float32)),))


def channel_interpolate(layer1: str, channel1: int, layer2: str, channel2: int) -> Objective:
    """lucid's ``channel_interpolate``: image n of B scores (1 - w) channel1 + w channel2 (spatial means),
    w = n / (B - 1), so the batch moves from the first unit to the second (one image: the first)."""
    chans = (jnp.asarray(channel1, jnp.int32), jnp.asarray(channel2, jnp.int32))
    return Objective((Term("channel_interpolate", (layer1, layer2), chans),))


def diversity(layer: str) -> Objective:
    """lucid's ``diversity``, negated so that it is ascended: -sum_{j != i} <G_i, G_j> / B for image i, with
    G_i the Gram matrix F^T F of image i's activations at ``layer`` scaled to unit Frobenius norm.

    Summed over the batch it is minus lucid's value (lucid's notebooks subtract ``diversity``; here it
    is added: ``channel(...) + 1e2 * diversity(layer)``).
    """
    return Objective((Term("diversity", (layer,), ()),))


def alignment(layer: str, decay_ratio: float = 2.0) -> Objective:
    """lucid's ``alignment``: minus the mean squared difference at ``layer`` between images d = 1..4 apart in
    the batch, divided by ``decay_ratio ** d``; each pair's term is split evenly between its two images,
    so the sum over the batch is lucid's value."""
    return Objective((Term("alignment", (layer, float(decay_ratio)), ()),))
