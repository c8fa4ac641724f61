"""The input-optimisation loop: N optax steps on the image, run by ``problem.Ascent``.

``InputOptimizer(model, variables, ...)`` fixes the model, the
parametrization, the robustness transforms and the optimiser;
``run(objective, init, key=...)`` ascends ``objective`` (per image, summed
over the batch so every image gets its own gradient) and returns the images
in [0, 1] with the per-step objective values (on the CPU fast path one
compiled step per call, elsewhere one ``lax.scan``). The loop compiles once per
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
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import cpu
from jaxcnn.cpu import policy as cpu_policy
from jaxcnn.imagenet import preprocess
from jaxcnn.inputopt import problem
from jaxcnn.inputopt.objectives import Objective
from jaxcnn.inputopt.param import get_param
from jaxcnn.inputopt.transforms import apply_transforms


def scale_by_mean_abs() -> optax.GradientTransformation:
    """Divides each image's gradient by its mean absolute value (DeepDream's normalised step).

    Scale-invariant: a gradient multiplied by any positive factor gives the same step, so an
    objective whose gradient is tiny but nonzero (a network whose activations are small, such as
    one with random weights) still moves the image by ``learning_rate`` per pixel on average. No
    absolute epsilon is added (one would swamp such gradients); the divisor is only kept above the
    smallest normal float so that a gradient of exactly zero gives a zero step.
    """

    def update(updates, state, params=None):
        del params

        def norm(g):
            scale = jnp.mean(jnp.abs(g), axis=tuple(range(1, g.ndim)), keepdims=True)
            return g / jnp.maximum(scale, jnp.finfo(g.dtype).tiny)

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
        self._fixed = {}   # per CPU policy: the variables with their kernels' Winograd transforms
        self.tx = make_optimizer(optimizer, learning_rate)
        self.param = get_param(param)
        self.transforms = tuple(transforms)
        self.shard = shard
        self._init = cpu.jit(self._init_impl, static_argnums=(1, 3))
        self._loop = problem.Ascent(self._step)
        self._chunk = self._loop.compiled

    @property
    def trace_count(self) -> int:
        """How often the ascent's step was traced (once per image shape and objective structure)."""
        return self._loop.trace_count

    # -------------------------------------------------------------- compiled pieces
    def _score(self, variables, objective, params, key):
        x = self.param.to_image(params)
        xt = apply_transforms(self.transforms, x, key) if self.transforms else x
        logits, features = self.model.apply(variables, preprocess(xt), train=False)
        per_image = objective({"features": features, "logits": logits, "image": x})
        return -jnp.sum(per_image), per_image

    def _init_impl(self, key, shape, image, sharding):
        params = self.param.init(key, shape, image)
        return problem.place((params, self.tx.init(params)), sharding, shape[0])

    def _step(self, consts, carry, key, *, sharding):
        variables, objective = consts
        params, opt_state = carry
        value_fn = lambda p: self._score(variables, objective, p, key)[0]
        (value, per_image), grad = jax.value_and_grad(self._score, argnums=2, has_aux=True)(
            variables, objective, params, key)
        updates, opt_state = self.tx.update(grad, opt_state, params, value=value, grad=grad, value_fn=value_fn)
        params = self.param.project(optax.apply_updates(params, updates))
        return problem.place((params, opt_state), sharding, per_image.shape[0]), per_image

    # -------------------------------------------------------------- driver

    def run(self, objective: Objective, init, *, key: int | jax.Array = 0, progress: bool = False) -> Result:
        """Ascends ``objective`` from ``init``: images (B, H, W, 3) in [0, 1], or a shape (B, H, W) for noise."""
        if isinstance(init, tuple) and len(init) == 3:
            shape, image = (*init, 3), None
        else:
            problem.check_images01(init, "initial images")
            image = jnp.asarray(init, jnp.float32)
            shape = tuple(image.shape)
        logits, features = problem.feature_shapes(self.model, self.variables, shape)
        problem.check_objective(objective, logits.shape, features)
        key = jax.random.key(key) if isinstance(key, int) else key
        init_key, key = jax.random.split(key)
        sharding = problem.batch_sharding(shape[0]) if self.shard else None
        if sharding is not None and image is not None:
            image = jax.device_put(image, sharding)
        carry = self._init(init_key, shape, image, sharding)
        start = jnp.copy(self.param.to_image(carry[0]))  # the carry is donated to the loop
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=self.steps, unit="step", dynamic_ncols=True, leave=False)

        def after(carry, values, done):
            bar.update(done - bar.n)
            bar.set_postfix(objective=f"{float(jnp.mean(values[-1])):.4g}")

        policy = cpu_policy.key()
        if policy not in self._fixed:
            self._fixed[policy] = cpu.fixed_weights(self.variables, remember=False)
        try:
            carry, history = self._loop((self._fixed[policy], objective), carry, jax.random.split(key, self.steps),
                                        chunk=_chunk_size(self.steps) if progress else None,
                                        after=after if progress else None, sharding=sharding)
        finally:
            if bar is not None:
                bar.close()
        params = carry[0]
        return Result(self.param.to_image(params), np.asarray(history), params, start)


def _chunk_size(steps: int) -> int:
    """The largest divisor of ``steps`` that is at most a tenth of it (so a progress bar moves, one compile)."""
    limit = max(1, steps // 10)
    return max(d for d in range(1, limit + 1) if steps % d == 0)


def evaluate(model, variables, objective: Objective, images) -> np.ndarray:
    """The objective's per-image values on ``images`` (B, H, W, 3) in [0, 1], without transforms."""
    logits, features = model.apply(variables, preprocess(jnp.asarray(images, jnp.float32)), train=False)
    return np.asarray(objective({"features": features, "logits": logits, "image": jnp.asarray(images)}))

