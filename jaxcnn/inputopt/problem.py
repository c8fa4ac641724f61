"""What every input-optimisation method shares: checks, feature shapes, sharding, a clean forward, the loop.

The attacks, the patch, the attributions, inspection, robustness, fooling and ``InputOptimizer``
take pixel-space images (B, H, W, 3) in [0, 1] and a model ``apply(variables, x, train=False) ->
(logits, features)``. This module holds what each of them needs around its own computation:

* checks with one-line errors: ``check_images01``, ``check_classes``, ``check_objective``,
  ``attack_batch`` (images, labels, targets and a budget together);
* ``feature_shapes``: the model's (logits, features) shapes, traced once per model and image shape;
* ``batch_sharding`` / ``place``: a batch that divides over the devices split along a
  ``("data",)`` mesh;
* ``logits``: the compiled clean forward (float32 logits), one program per model and shape;
* ``fixed_weights``: the variables with their kernels' Winograd transforms made once
  (``cpu.fixed_weights``), for weights that stay fixed over a method's many forwards;
* ``Ascent``: an iterative method's step run N times by the CPU loop rule (``cpu.steps_per_call``):
  one compiled step called N times from Python on the CPU fast path, one ``lax.scan`` elsewhere.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess


# ---------------------------------------------------------------- checks
def check_images01(images, what: str = "images") -> None:
    """Pixel-space images: (B, H, W, 3), finite, within [0, 1]; one-line error otherwise."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{what} must be (B, H, W, 3) pixel values in [0, 1]; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain NaN or Inf values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{what} must be pixel values in [0, 1]; found {x.min():.3g}..{x.max():.3g}")


def check_classes(values, n: int, what: str = "target class") -> None:
    """Class indices within 0..n-1; one-line error naming ``what`` and the model's class count otherwise."""
    a = np.asarray(values)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{what} out of range: got {a.min()}..{a.max()}, the model has {n} classes")


def feature_shapes(model, variables, image_shape: Sequence[int]) -> tuple[Any, dict]:
    """(logits, features) shapes of the model at ``image_shape`` (B, H, W, 3), without computing anything.

    Traced once per (module, variable shapes and dtypes, image shape) and remembered (the result
    is shared: do not modify it): tracing a large model in Python costs a noticeable share of a
    short run, which every method would otherwise spend again on checking its arguments.
    """
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    signature = tuple((tuple(np.shape(a)), jnp.dtype(a.dtype)) for a in leaves)
    try:
        return _feature_shapes(model, treedef, signature, tuple(image_shape))
    except TypeError:   # a module with unhashable fields: traced afresh
        return _trace_shapes(model, variables, tuple(image_shape))


def _trace_shapes(model, variables, image_shape: tuple[int, ...]):
    x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)


@functools.lru_cache(maxsize=64)
def _feature_shapes(model, treedef, signature, image_shape):
    variables = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in signature])
    return _trace_shapes(model, variables, image_shape)


def num_classes(model, variables, image_shape: Sequence[int]) -> int:
    """The model's number of classes (its logits' last dimension) at ``image_shape`` (B, H, W, 3)."""
    return feature_shapes(model, variables, (1, *tuple(image_shape)[1:]))[0].shape[-1]


_CLASS_KINDS = ("class_logit", "class_logprob")
_CHANNEL_KINDS = ("channel", "neuron")
_DIRECTION_KINDS = ("direction", "direction_neuron")


def _check_channels(layer: str, channels, shape) -> None:
    c = np.asarray(channels)
    if c.size and (c.min() < 0 or c.max() >= shape[-1]):
        raise ValueError(f"channel {c.min()}..{c.max()} out of range for {layer}, which has {shape[-1]} channels")


def _check_position(kind: str, layer: str, y, x, shape) -> None:
    if len(shape) != 4:
        return
    for name, pos, n in (("y", y, shape[1]), ("x", x, shape[2])):
        if pos is not None and not 0 <= pos < n:
            raise ValueError(f"{kind} {name}={pos} out of range for {layer}, whose feature map "
                             f"is {shape[1]}x{shape[2]}")


def check_objective(objective, logits_shape, features: dict) -> None:
    """The objective against the model's shapes: unknown layers (listing the valid ones), class labels,
    channels, direction lengths and neuron positions out of range fail with one line."""
    for layer in objective.layers:
        if layer not in features:
            raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(features)}")
    for t in objective.flat_terms():
        if t.kind in _CLASS_KINDS:
            check_classes(t.params, logits_shape[-1], "class label")
        elif t.kind in _CHANNEL_KINDS:
            layer, shape = t.static[0], features[t.static[0]].shape
            _check_channels(layer, t.params, shape)
            if t.kind == "neuron":
                _check_position("neuron", layer, t.static[1], t.static[2], shape)
        elif t.kind == "channel_interpolate":
            for layer, channels in zip(t.static, t.params):
                _check_channels(layer, channels, features[layer].shape)
        elif t.kind in _DIRECTION_KINDS:
            layer, shape = t.static[0], features[t.static[0]].shape
            if np.shape(t.params)[-1:] != shape[-1:]:
                raise ValueError(f"{t.kind} vector of shape {np.shape(t.params)} does not fit {layer}, "
                                 f"which has {shape[-1]} channels")
            if t.kind == "direction_neuron":
                _check_position("direction_neuron", layer, t.static[1], t.static[2], shape)


def check_unit(model, variables, images, objective, what: str = "images") -> jax.Array:
    """``images`` as float32 after checking them and ``objective`` against the model (attributions, loops)."""
    check_images01(images, what)
    x = jnp.asarray(images, jnp.float32)
    logits, features = feature_shapes(model, variables, x.shape)
    check_objective(objective, logits.shape, features)
    return x


# ---------------------------------------------------------------- sharding
def batch_sharding(batch: int) -> NamedSharding | None:
    """Splits a batch along a ``("data",)`` mesh of all devices, or None when it does not divide (or one device)."""
    devices = jax.devices()
    if len(devices) == 1 or batch % len(devices):
        return None
    return NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))


def place(tree, sharding: NamedSharding | None, batch: int):
    """Inside a traced function: arrays with a leading batch axis split by ``sharding``, others replicated.

    A loop's state leaves its step with the shardings it came in with, so the step compiles once
    (with the shardings XLA propagates, an optimiser's state can come out of the first step split
    where it went in replicated, and the second step compile again)."""
    if sharding is None:
        return tree
    replicated = NamedSharding(sharding.mesh, P())
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(
        a, sharding if a.ndim and a.shape[0] == batch else replicated), tree)


def shard_batch(*arrays):
    """``arrays`` (each None or with the same leading batch axis) put on the batch sharding when it applies."""
    batch = next(a.shape[0] for a in arrays if a is not None)
    sharding = batch_sharding(batch)
    if sharding is None:
        return arrays
    return tuple(None if a is None else jax.device_put(a, sharding) for a in arrays)


def attack_batch(model, variables, x, labels, target=None, eps=None):
    """Checked attack inputs: (x float32, labels int32 (B,), target int32 (B,) or None), sharded when the
    batch divides over the devices."""
    check_images01(x)
    x = jnp.asarray(x, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {labels.shape[0]} labels")
    if eps is not None and (not math.isfinite(float(eps)) or float(eps) < 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {eps}")
    n = num_classes(model, variables, x.shape)
    check_classes(labels, n, "label")
    if target is not None:
        check_classes(target, n)
        target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), labels.shape)
    return shard_batch(x, labels, target)


# ---------------------------------------------------------------- the clean forward and fixed weights
@functools.partial(cpu.jit, static_argnames=("model",))
def logits(model, variables, x):
    """float32 logits of pixel-space images (B, H, W, 3) in [0, 1] (eval mode; float64 where the model computes
    in float64, for checks against float64 references); compiled once per model and shape, and traceable
    inside other compiled code."""
    out = model.apply(variables, preprocess(x), train=False)[0]
    return out.astype(jnp.promote_types(out.dtype, jnp.float32))


def fixed_weights(variables):
    """``variables`` for many forwards with the same weights (``cpu.fixed_weights``; as they are where no
    transform applies)."""
    return cpu.fixed_weights(variables)


# ---------------------------------------------------------------- the ascent loop
class Ascent:
    """``carry, ys = lax.scan(step, carry, xs)`` run by the CPU loop rule.

    ``step(consts, carry, x, **static) -> (carry, y)``: ``consts`` are arrays read by every step
    (variables, images), ``static`` hashable settings (the model, sizes). XLA:CPU runs a while
    loop's body several times slower than the same ops at top level
    (``benchmarks/cpu/inputopt_loops.py``), so on the CPU fast path (``cpu.steps_per_call``) the
    step is compiled once and called N times from Python with the carry on the device (donated);
    elsewhere all N steps are one compiled ``lax.scan``. Both run the same step on the same inputs.
    ``trace_count`` counts the traces of the compiled chunk.
    """

    def __init__(self, step: Callable):
        self._step = step
        self.trace_count = 0
        self.compiled = cpu.jit(self._chunk, static_argnames=("n", "static"), donate_argnums=(1,))

    def _chunk(self, consts, carry, xs, start, *, n: int, static: tuple):
        self.trace_count += 1
        options = dict(static)
        body = lambda c, x: self._step(consts, c, x, **options)
        if xs is None:
            part = None
        else:
            part = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, n), xs)
        if n == 1:          # straight-line code: no while loop
            carry, y = body(carry, None if part is None else jax.tree.map(lambda a: a[0], part))
            return carry, jax.tree.map(lambda a: a[None], y)
        return jax.lax.scan(body, carry, part, length=n)

    def __call__(self, consts, carry, xs=None, *, length: int | None = None, chunk: int | None = None,
                 after: Callable | None = None, **static):
        """Runs the ``length`` steps (the leading axis of ``xs`` when given) from ``carry``; returns
        (carry, ys stacked over the steps). ``chunk`` divides ``length``: steps per call off the CPU fast
        path too (a progress bar's granularity). ``after(carry, ys, steps_done)`` is called on the host
        after each call; it returning True stops the loop early (an answer that no further step changes)."""
        total = length if xs is None else jax.tree.leaves(xs)[0].shape[0]
        if total < 1:
            raise ValueError(f"an ascent needs at least one step, got {total}")
        n = cpu.steps_per_call(chunk or total)
        if total % n:
            raise ValueError(f"{total} steps do not split into calls of {n}")
        key = tuple(sorted(static.items()))
        pieces = []
        for start in range(0, total, n):
            carry, ys = self.compiled(consts, carry, xs, np.int32(start), n=n, static=key)
            pieces.append(ys)
            if after is not None and after(carry, ys, start + n):
                break
        if len(pieces) == 1:
            return carry, pieces[0]
        return carry, jax.tree.map(lambda *a: jnp.concatenate(a), *pieces)
