"""The input-optimisation loop: N optax steps on the image as one compiled ``lax.scan``.

``InputOptimizer(model, variables, ...)`` fixes the model, the
parametrization, the robustness transforms and the optimiser;
``run(objective, init, key=...)`` ascends ``objective`` (per image, summed
over the batch so every image gets its own gradient) and returns the images
in [0, 1] with the per-step objective values (on the CPU one compiled step
per call, see ``jaxcnn.cpu.loops``). The loop compiles once per
(image shape, objective structure): new targets, labels and weights of the
same shapes reuse it (``trace_count`` says how often it was traced). A batch
whose size divides over the devices is sharded along a ``("data",)`` mesh,
so many images (different classes, different targets) optimise in parallel.

Any optax optimiser works; ``"lbfgs"`` (optax's L-BFGS with a zoom line
search) receives the value, gradient and the (deterministic, per step)
objective function it needs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn import cpu
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt.objectives import Objective
from jaxcnn.inputopt.param import get_param
from jaxcnn.inputopt.transforms import apply_transforms


def scale_by_mean_abs(eps: float = 1e-8) -> optax.GradientTransformation:
    """Divides each image's gradient by its mean absolute value (DeepDream's normalised step)."""

    def update(updates, state, params=None):
        del params
        norm = lambda g: g / (jnp.mean(jnp.abs(g), axis=tuple(range(1, g.ndim)), keepdims=True) + eps)
        return jax.tree.map(norm, updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(name: str | optax.GradientTransformation, learning_rate: float) -> optax.GradientTransformation:
    """``adam``, ``sgd`` (momentum 0.9), ``lbfgs``, ``normalized_sgd`` (DeepDream) or an optax transformation."""
    if not isinstance(name, str):
        return name
    makers = {
        "adam": lambda: optax.adam(learning_rate),
        "sgd": lambda: optax.sgd(learning_rate, momentum=0.9),
        "lbfgs": lambda: optax.lbfgs(),  # step sizes come from its line search
        "normalized_sgd": lambda: optax.chain(scale_by_mean_abs(), optax.sgd(learning_rate)),
    }
    if name not in makers:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(makers)}")
    return makers[name]()


@dataclasses.dataclass
class Result:
    """images (B, H, W, 3) float32 in [0, 1]; history (steps, B) objective values before each step;
    start: the images the ascent started from; params: the final parametrization."""

    images: jax.Array
    history: np.ndarray
    params: Any
    start: jax.Array


def batch_sharding(batch: int) -> NamedSharding | None:
    """Splits a batch along a ``("data",)`` mesh of all devices, or None when it does not divide (or one device)."""
    devices = jax.devices()
    if len(devices) == 1 or batch % len(devices):
        return None
    return NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))


def _place(tree, sharding: NamedSharding | None, batch: int):
    """Inside a traced function: arrays with a leading batch axis split by ``sharding``, others replicated.

    The ascent's state leaves its step with the shardings it came in with, so the step compiles once
    (with the shardings XLA propagates, the optimiser's state came out of the first step split where
    it went in replicated, and the second step compiled again)."""
    if sharding is None:
        return tree
    replicated = NamedSharding(sharding.mesh, P())
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(
        a, sharding if a.ndim and a.shape[0] == batch else replicated), tree)


def check_images01(images, what: str = "images") -> None:
    """Pixel-space images: (B, H, W, 3), finite, within [0, 1]; one-line error otherwise."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{what} must be (B, H, W, 3) pixel values in [0, 1]; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain NaN or Inf values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{what} must be pixel values in [0, 1]; found {x.min():.3g}..{x.max():.3g}")


def feature_shapes(model, variables, image_shape: Sequence[int]) -> tuple[Any, dict]:
    """(logits, features) shapes of the model at ``image_shape`` (B, H, W, 3), without computing anything.

    Traced once per (module, variable shapes and dtypes, image shape) and remembered (the result
    is shared: do not modify it): tracing a GoogLeNet in Python takes about 0.45 s on this
    project's CPU, which every ``InputOptimizer.run`` and attack would otherwise spend again on
    checking its arguments (half of a 10-step DeepDream run at 128 px).
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


def check_objective(objective: Objective, logits_shape, features: dict) -> None:
    """Unknown layers (listing the valid ones) and class labels out of range fail with one line."""
    for layer in objective.layers:
        if layer not in features:
            raise ValueError(f"the model has no layer {layer!r}; valid: {', '.join(features)}")
    for t in objective.terms:
        if t.kind in ("class_logit", "class_logprob"):
            labels = np.asarray(t.params)
            n = logits_shape[-1]
            if labels.size and (labels.min() < 0 or labels.max() >= n):
                raise ValueError(f"class label out of range: got {labels.min()}..{labels.max()}, the model has {n}")


class InputOptimizer:
    """Gradient ascent on the input of ``model`` (``apply(variables, x, train=False) -> (logits, features)``).

    steps: ascent steps per ``run``; optimizer: name or optax transformation;
    param: ``"pixels"``, ``"fourier"`` or a parametrization instance;
    transforms: robustness transforms (``jaxcnn.inputopt.transforms``);
    shard: spread the batch over all devices when it divides evenly.
    """

    def __init__(self, model, variables, *, steps: int = 256, optimizer="adam", learning_rate: float = 0.05,
                 param="pixels", transforms: Sequence = (), shard: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.model, self.variables, self.steps = model, variables, int(steps)
        self._fixed = None   # the variables with their kernels' Winograd transforms, made on the first run
        self.tx = make_optimizer(optimizer, learning_rate)
        self.param = get_param(param)
        self.transforms = tuple(transforms)
        self.shard = shard
        self.trace_count = 0
        self._init = cpu.jit(self._init_impl, static_argnums=(1, 3))
        self._chunk = cpu.jit(self._chunk_impl, static_argnums=(4, 5), donate_argnums=(2,))

    # -------------------------------------------------------------- compiled pieces
    def _score(self, variables, objective, params, key):
        x = self.param.to_image(params)
        xt = apply_transforms(self.transforms, x, key) if self.transforms else x
        logits, features = self.model.apply(variables, preprocess(xt), train=False)
        per_image = objective({"features": features, "logits": logits, "image": x})
        return -jnp.sum(per_image), per_image

    def _init_impl(self, key, shape, image, sharding):
        params = self.param.init(key, shape, image)
        return _place((params, self.tx.init(params)), sharding, shape[0])

    def _chunk_impl(self, variables, objective, carry, key, n: int, sharding):
        self.trace_count += 1

        def step(carry, k):
            params, opt_state = carry
            value_fn = lambda p: self._score(variables, objective, p, k)[0]
            (value, per_image), grad = jax.value_and_grad(self._score, argnums=2, has_aux=True)(
                variables, objective, params, k)
            updates, opt_state = self.tx.update(grad, opt_state, params, value=value, grad=grad, value_fn=value_fn)
            params = self.param.project(optax.apply_updates(params, updates))
            return (params, opt_state), per_image

        batch = jax.tree.leaves(carry[0])[0].shape[0]
        if n == 1:  # straight-line code: no while loop (see jaxcnn.cpu.loops)
            carry, values = step(carry, key)
            return _place(carry, sharding, batch), values[None]
        carry, values = jax.lax.scan(step, carry, jax.random.split(key, n))
        return _place(carry, sharding, batch), values

    # -------------------------------------------------------------- driver

    def run(self, objective: Objective, init, *, key: int | jax.Array = 0, progress: bool = False) -> Result:
        """Ascends ``objective`` from ``init``: images (B, H, W, 3) in [0, 1], or a shape (B, H, W) for noise."""
        if isinstance(init, tuple) and len(init) == 3:
            shape, image = (*init, 3), None
        else:
            check_images01(init, "initial images")
            image = jnp.asarray(init, jnp.float32)
            shape = tuple(image.shape)
        logits, features = feature_shapes(self.model, self.variables, shape)
        check_objective(objective, logits.shape, features)
        key = jax.random.key(key) if isinstance(key, int) else key
        init_key, key = jax.random.split(key)
        sharding = batch_sharding(shape[0]) if self.shard else None
        if sharding is not None and image is not None:
            image = jax.device_put(image, sharding)
        carry = self._init(init_key, shape, image, sharding)
        start = jnp.copy(self.param.to_image(carry[0]))  # the carry is donated to the loop
        chunk = cpu.steps_per_call(_chunk_size(self.steps) if progress else self.steps)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=self.steps, unit="step", dynamic_ncols=True, leave=False)
        if self._fixed is None:
            self._fixed = cpu.fixed_weights(self.variables, remember=False)
        history = []
        try:
            for k in jax.random.split(key, self.steps // chunk):
                carry, values = self._chunk(self._fixed, objective, carry, k, chunk, sharding)
                history.append(values)
                if bar is not None:
                    bar.update(chunk)
                    bar.set_postfix(objective=f"{float(jnp.mean(values[-1])):.4g}")
        finally:
            if bar is not None:
                bar.close()
        params = carry[0]
        return Result(self.param.to_image(params), np.concatenate([np.asarray(h) for h in history]), params, start)


def _chunk_size(steps: int) -> int:
    """The largest divisor of ``steps`` that is at most a tenth of it (so a progress bar moves, one compile)."""
    limit = max(1, steps // 10)
    return max(d for d in range(1, limit + 1) if steps % d == 0)


def evaluate(model, variables, objective: Objective, images) -> np.ndarray:
    """The objective's per-image values on ``images`` (B, H, W, 3) in [0, 1], without transforms."""
    logits, features = model.apply(variables, preprocess(jnp.asarray(images, jnp.float32)), train=False)
    return np.asarray(objective({"features": features, "logits": logits, "image": jnp.asarray(images)}))

