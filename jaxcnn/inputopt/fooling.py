"""Fooling images (Nguyen, Yosinski & Clune 2015): unrecognisable images classified with >= 99% confidence.

``fool_gradient``: gradient ascent on log p(class) from noise (pixels, no
  regulariser), one image per class in one compiled loop.
``fool_evolution``: no gradients. A population per class evolves on device
  (generations run by ``problem.Ascent``; every generation is one batched
  forward pass of classes x population): the best quarter survive unchanged and the
  rest are mutated copies of survivors. Two encodings: ``direct`` (the genome
  is the pixels; a random 10% of values get Gaussian noise) and ``cppn``
  (a compositional pattern-producing network: the genome is the weights of a
  fixed small MLP from (x, y, r) to RGB with sine, Gaussian and tanh units,
  which yields regular, symmetric patterns; Nguyen et al. evolve the topology
  with NEAT, here it is fixed and only the weights evolve).
``noise_probe``: the model's predictions on N(0.5, 0.25^2) noise, against
  the confidence threshold that keeps 95% of real images.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu
from jaxcnn.inputopt import objectives as O, problem
from jaxcnn.inputopt.optimize import InputOptimizer
from jaxcnn.inputopt.param import Pixels


@dataclasses.dataclass
class FoolingResult:
    """images (C, H, W, 3) in [0, 1], one per class; confidence (C,) p(class); history (steps, C) best p."""

    images: jax.Array
    confidence: np.ndarray
    history: np.ndarray


def _probs(model, variables, x):
    return jax.nn.softmax(problem.logits(model, variables, x), axis=-1)


def _check_classes(model, variables, labels, size) -> jax.Array:
    labels = jnp.asarray(labels, jnp.int32).reshape(-1)
    problem.check_classes(labels, problem.num_classes(model, variables, (1, size, size, 3)))
    return labels


def fool_gradient(model, variables, labels, *, size: int, steps: int = 100, learning_rate: float = 0.05,
                  key: int = 0) -> FoolingResult:
    """Gradient ascent on log p(label) from N(0.5, 0.25^2) noise (clipped), for each label at once."""
    labels = _check_classes(model, variables, labels, size)
    opt = InputOptimizer(model, variables, steps=steps, learning_rate=learning_rate, param=Pixels(noise_std=0.25))
    res = opt.run(O.class_logprob(labels), (labels.shape[0], size, size), key=key)
    conf = np.asarray(_probs(model, variables, res.images)[jnp.arange(labels.shape[0]), labels])
    return FoolingResult(res.images, conf, np.exp(res.history))


# ---------------------------------------------------------------- encodings: genome -> image
def _coords(size: int) -> jax.Array:
    y, x = jnp.meshgrid(jnp.linspace(-1, 1, size), jnp.linspace(-1, 1, size), indexing="ij")
    return jnp.stack([x, y, jnp.sqrt(x * x + y * y), jnp.ones_like(x)], -1)      # (S, S, 4)


CPPN_WIDTH = 16
_ACTIVATIONS = (jnp.sin, lambda z: jnp.exp(-z * z), jnp.tanh)


def _cppn_shapes():
    dims = [4] + [CPPN_WIDTH] * len(_ACTIVATIONS) + [3]
    return [(a, b) for a, b in zip(dims[:-1], dims[1:])]


def _cppn_image(weights, size: int):
    h = _coords(size)
    for w, act in zip(weights[:-1], _ACTIVATIONS):
        h = act(h @ w)
    return jax.nn.sigmoid(h @ weights[-1])


def _init_genome(encoding, key, size):
    if encoding == "direct":
        return jnp.clip(0.5 + 0.25 * jax.random.normal(key, (size, size, 3)), 0, 1)
    keys = jax.random.split(key, len(_cppn_shapes()))
    return [jax.random.normal(k, s) * (1.5 / np.sqrt(s[0])) for k, s in zip(keys, _cppn_shapes())]


def _mutate(encoding, genome, key):
    if encoding == "direct":
        k1, k2 = jax.random.split(key)
        hit = jax.random.bernoulli(k1, 0.1, genome.shape)
        return jnp.clip(genome + hit * 0.25 * jax.random.normal(k2, genome.shape), 0, 1)
    leaves = jax.random.split(key, len(genome))
    return [w + 0.15 * jax.random.normal(k, w.shape) * jax.random.bernoulli(jax.random.fold_in(k, 1), 0.3, w.shape)
            for w, k in zip(genome, leaves)]


def _render(encoding, genome, size):
    return genome if encoding == "direct" else _cppn_image(genome, size)


def _fitness(model, variables, labels, pop, *, encoding, size, population):
    """p(label) of every member: (C, N), one batched forward of all C x N images."""
    c = labels.shape[0]
    imgs = jax.vmap(jax.vmap(lambda g: _render(encoding, g, size)))(pop).reshape(c * population, size, size, 3)
    p = _probs(model, variables, imgs).reshape(c, population, -1)
    return jnp.take_along_axis(p, labels[:, None, None], axis=2)[..., 0]


@functools.partial(cpu.jit, static_argnames=("model", "encoding", "size", "population"))
def _populations(model, variables, labels, key, *, encoding, size, population):
    c = labels.shape[0]
    k0, key = jax.random.split(key)
    init = jax.vmap(jax.vmap(lambda k: _init_genome(encoding, k, size)))(
        jax.random.split(k0, c * population).reshape(c, population))
    fit = _fitness(model, variables, labels, init, encoding=encoding, size=size, population=population)
    return (init, fit), key


def _generation(consts, carry, k, *, model, encoding, size, population):
    """The best quarter of each population survives; the rest are mutated copies of survivors."""
    variables, labels = consts
    pop, fit = carry
    c = labels.shape[0]
    survivors = max(1, population // 4)
    order = jnp.argsort(-fit, axis=1)
    take = lambda a, idx: jax.tree.map(lambda x: jnp.take_along_axis(
        x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1), a)
    elite = take(pop, order[:, :survivors])
    ks, km = jax.random.split(k)
    parents = jax.random.randint(ks, (c, population - survivors), 0, survivors)
    children = jax.vmap(jax.vmap(lambda g, kk: _mutate(encoding, g, kk)))(
        take(elite, parents), jax.random.split(km, c * (population - survivors)).reshape(c, population - survivors))
    pop = jax.tree.map(lambda e, ch: jnp.concatenate([e, ch], axis=1), elite, children)
    fit = _fitness(model, variables, labels, pop, encoding=encoding, size=size, population=population)
    return (pop, fit), jnp.max(fit, axis=1)


_evolution = problem.Ascent(_generation)


@functools.partial(cpu.jit, static_argnames=("encoding", "size"))
def _winners(pop, fit, *, encoding, size):
    c = fit.shape[0]
    best = jnp.argmax(fit, axis=1)
    winner = jax.tree.map(lambda x: jnp.take_along_axis(x, best.reshape((c, 1) + (1,) * (x.ndim - 2)), 1)[:, 0], pop)
    return jax.vmap(lambda g: _render(encoding, g, size))(winner), jnp.max(fit, axis=1)


def fool_evolution(model, variables, labels, *, size: int, encoding: str = "direct", population: int = 64,
                   generations: int = 200, key: int = 0) -> FoolingResult:
    """Evolves one fooling image per label without gradients; ``encoding`` is ``direct`` or ``cppn``."""
    if encoding not in ("direct", "cppn"):
        raise ValueError(f"unknown encoding {encoding!r}; valid: direct, cppn")
    if population < 2 or generations < 1:
        raise ValueError(f"population must be >= 2 and generations >= 1, got {population}, {generations}")
    labels = _check_classes(model, variables, labels, size)
    settings = {"encoding": encoding, "size": size, "population": population}
    carry, key = _populations(model, variables, labels, jax.random.key(key), **settings)
    (pop, fit), history = _evolution((variables, labels), carry, jax.random.split(key, generations), model=model,
                                     **settings)
    images, conf = _winners(pop, fit, encoding=encoding, size=size)
    return FoolingResult(images, np.asarray(conf), np.asarray(history))


def noise_probe(model, variables, real_images, *, n: int = 256, key: int = 0, keep: float = 0.95) -> dict:
    """Predictions on ``n`` N(0.5, 0.25^2) noise images (clipped to [0, 1]), shaped like ``real_images``.

    Returns the noise images' predicted-class histogram and confidences, the
    confidence threshold that keeps ``keep`` of the real images, and the
    fraction of noise images that pass it (a detector that thresholds
    confidence lets these through).
    """
    problem.check_images01(real_images)
    shape = (n, *np.shape(real_images)[1:])
    noise = jnp.clip(0.5 + 0.25 * jax.random.normal(jax.random.key(key), shape), 0, 1)
    p_noise = np.asarray(_probs(model, variables, noise))
    p_real = np.asarray(_probs(model, variables, jnp.asarray(real_images, jnp.float32)))
    conf_noise, conf_real = p_noise.max(1), p_real.max(1)
    threshold = float(np.quantile(conf_real, 1 - keep))
    return {"predicted": np.bincount(p_noise.argmax(1), minlength=p_noise.shape[1]).tolist(),
            "noise_confidence_mean": float(conf_noise.mean()), "noise_confidence_median": float(np.median(conf_noise)),
            "real_confidence_median": float(np.median(conf_real)), "threshold": threshold,
            "noise_passing_threshold": float(np.mean(conf_noise >= threshold)), "confidences": conf_noise}
