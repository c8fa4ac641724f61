"""Attacks as passes over the examples still robust: fixed-size padded batches, per-example keys, first success.

AutoAttack's bookkeeping (Croce & Hein 2020): an attack made of several passes (APGD-T's target
classes, restarts) and an ensemble of attacks both run each pass only on the examples that no
earlier pass has broken, and keep per example the first adversarial image found. Here a pass is a
function of one batch; ``run_passes`` gathers the still-robust examples in order and cuts them in
batches of one fixed size, the last one padded with copies of its first example whose results are
dropped, so a pass's compiled programs are traced once however many examples are left (and the
batch splits over the devices: its size is a multiple of their number).

An example counts as broken when the pass says so *and* a fresh forward of the returned image
misclassifies it (AutoAttack checks the returned images the same way). Random numbers are drawn
per example from (seed, pass, example index) (``example_keys``): an example's result does not
depend on which other examples share its batch, so attacking the remaining subset gives each
example what attacking the whole set would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.inputopt import problem
from jaxcnn.inputopt.attacks import AttackResult

MISCLASSIFIED = -1   # ``first`` of an example the model gets wrong without any attack


@dataclasses.dataclass(frozen=True)
class Pass:
    """One run of an attack: ``run(x (b, H, W, 3), labels (b,), index (b,) int32, key) -> (adv, fooled (b,))``.

    ``index`` holds the examples' positions in the evaluated set (for ``example_keys``); ``adv`` is
    the adversarial image where ``fooled``, anything within the budget elsewhere. ``attack`` names
    the attack the pass belongs to (several passes may share it)."""

    attack: str
    run: Callable


@dataclasses.dataclass
class Outcome:
    """Per example: ``first`` (N,) the index in ``attacks`` of the attack that broke it first, ``MISCLASSIFIED``
    (-1) when the clean image is already wrong, ``len(attacks)`` when none did; ``images`` (N, H, W, 3) the
    first adversarial image found (the clean image elsewhere); ``predictions`` (N,) the model's class for it."""

    attacks: tuple[str, ...]
    first: np.ndarray
    images: np.ndarray
    predictions: np.ndarray

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.first != MISCLASSIFIED))

    def robust_accuracy_after(self) -> list[float]:
        """Accuracy after each attack of ``attacks`` in turn (examples none of it and the earlier ones broke)."""
        return [float(np.mean(self.first > a)) for a in range(len(self.attacks))]

    @property
    def robust(self) -> np.ndarray:
        return self.first == len(self.attacks)


def seed_key(seed: int):
    """The attacks' key: threefry, whatever JAX's default PRNG, because a threefry key's numbers do not depend
    on how the keys are batched or the arrays sharded (``rbg``'s do), which per-example randomness needs."""
    return jax.random.key(seed, impl="threefry2x32")


def example_keys(key, index):
    """One key per example (b,) from a pass's key and the examples' positions ``index`` (b,) int32."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, index)


def batch_size_for(n: int, batch_size: int) -> int:
    """The fixed batch size for ``n`` examples: at most ``batch_size`` (at least one), a multiple of the devices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    devices = len(jax.devices())
    size = max(1, min(batch_size, n))
    return -(-size // devices) * devices


def padded_batches(indices: np.ndarray, size: int):
    """``(index (size,), count)`` for consecutive pieces of ``indices``; a short last piece is padded with its
    first entry (``count`` entries are real)."""
    for start in range(0, len(indices), size):
        part = indices[start:start + size]
        yield np.concatenate([part, np.full(size - len(part), part[0], part.dtype)]), len(part)


def predict(model, variables, x: np.ndarray, size: int) -> np.ndarray:
    """The model's classes (N,) for images (N, H, W, 3), in padded batches of ``size``."""
    out = np.empty(len(x), np.int32)
    for idx, count in padded_batches(np.arange(len(x)), size):
        (xb,) = problem.shard_batch(jnp.asarray(x[idx]))
        out[idx[:count]] = np.asarray(jnp.argmax(problem.logits(model, variables, xb), -1))[:count]
    return out


def run_passes(passes: Sequence[Pass], model, variables, x, labels, *, key, batch_size: int,
               attacks: Sequence[str] | None = None, clean: np.ndarray | None = None,
               on_pass: Callable | None = None) -> Outcome:
    """Runs ``passes`` in order, each on the examples still robust, keeping per example the first success.

    x (N, H, W, 3) float32 in [0, 1] and labels (N,) are checked by the caller. ``key``: a JAX key, folded
    with each pass's position. ``attacks``: the attack names in order (default: the passes' in order of
    appearance). ``clean``: the clean predictions when known. ``on_pass(pass_number, outcome)`` is called
    after each pass (progress).
    """
    x, labels = np.asarray(x), np.asarray(labels)
    names = tuple(attacks) if attacks is not None else tuple(dict.fromkeys(p.attack for p in passes))
    size = batch_size_for(len(x), batch_size)
    predictions = predict(model, variables, x, size) if clean is None else np.asarray(clean).copy()
    first = np.where(predictions == labels, len(names), MISCLASSIFIED).astype(np.int32)
    images = x.copy()
    outcome = Outcome(names, first, images, predictions)
    for number, p in enumerate(passes):
        a = names.index(p.attack)
        remaining = np.flatnonzero(first == len(names))
        pass_key = jax.random.fold_in(key, number)
        for idx, count in padded_batches(remaining, size):
            xb, yb, ib = problem.shard_batch(jnp.asarray(x[idx]), jnp.asarray(labels[idx], jnp.int32),
                                             jnp.asarray(idx, jnp.int32))
            adv, fooled = p.run(xb, yb, ib, pass_key)
            pred = np.asarray(jnp.argmax(problem.logits(model, variables, adv), -1))
            broken = (np.asarray(fooled) & (pred != labels[idx]))[:count]
            hit = idx[:count][broken]
            first[hit] = a
            images[hit] = np.asarray(adv)[:count][broken]
            predictions[hit] = pred[:count][broken]
        if on_pass is not None:
            on_pass(number, outcome)
    return outcome


# ---------------------------------------------------------------- checks and results shared by the attacks
NORMS = ("linf", "l2")


def check_inputs(model, variables, x, labels, eps, norm: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked inputs of a budgeted attack: (x float32 (N, H, W, 3), labels int32 (N,), number of classes);
    one-line errors for an unknown norm, a budget that is not > 0, images outside [0, 1], labels that are not
    integer classes of the model or not one per image."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    check_eps(eps)
    problem.check_images01(x)
    x = np.asarray(x, np.float32)
    y = np.asarray(labels)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got {y.dtype.name} values")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{len(x)} images but labels of shape {y.shape}; give one label per image")
    n = problem.num_classes(model, variables, x.shape)
    problem.check_classes(y, n, "label")
    return x, y.astype(np.int32), n


def check_eps(eps) -> None:
    if not np.isscalar(eps) or not np.isfinite(float(eps)) or float(eps) <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {eps}")


def check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}")


def check_num_classes(n: int, need: int, what: str) -> None:
    if n < need:
        raise ValueError(f"{what} needs a model with at least {need} classes; this one has {n}")


def attack_result(outcome: Outcome, x: np.ndarray):
    """An ``AttackResult``: success where the example is not robust (already wrong, or broken)."""
    d = (outcome.images - x).reshape(len(x), -1)
    return AttackResult(outcome.images, ~outcome.robust, np.abs(d).max(1) if d.size else np.zeros(len(x)),
                        np.sqrt(np.sum(np.square(d, dtype=np.float64), 1)).astype(np.float32), outcome.predictions)
