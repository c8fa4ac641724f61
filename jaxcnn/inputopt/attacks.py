"""Adversarial examples: FGSM, BIM, PGD (L-inf and L2, random start, restarts), Carlini-Wagner L2, DeepFool.

Every attack takes pixel-space images x (B, H, W, 3) in [0, 1] and their
true labels (B,), optionally ``target`` labels (targeted: make the model say
``target``; untargeted: make it say anything but the label), runs compiled
(the iterative ones by the loop rule of ``problem.Ascent``; a batch that
divides over the devices is split along a ``("data",)`` mesh) and returns an
``AttackResult``: the adversarial images (inside the budget and [0, 1]),
per-example success, L-inf and L2 perturbation sizes, and the predictions.

Losses are float32 cross-entropies of the model's logits on
``preprocess(x)``; models run with ``train=False``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import cpu
from jaxcnn.inputopt import problem


@dataclasses.dataclass
class AttackResult:
    """images (B, H, W, 3) in [0, 1]; success (B,) bool; linf, l2 (B,) perturbation norms; predictions (B,)."""

    images: jax.Array
    success: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    predictions: np.ndarray

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success))


clean_logits = problem.logits   # float32 logits of pixel-space images (eval mode), compiled once per model


def _loss(model, variables, x, labels, target):
    """Per-example loss to *ascend*: CE of the label (untargeted) or minus CE of the target (targeted)."""
    logits = clean_logits(model, variables, x)
    if target is None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return -optax.softmax_cross_entropy_with_integer_labels(logits, target)


def _grad(model, variables, x, labels, target):
    return jax.grad(lambda x: jnp.sum(_loss(model, variables, x, labels, target)))(x)


def _per_image_norm(v):
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1)).reshape(-1, *([1] * (v.ndim - 1)))


def project(delta, x, eps, norm: str):
    """Projects a perturbation onto the ``norm`` ball of radius ``eps`` and keeps x + delta in [0, 1]."""
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_per_image_norm(delta), 1e-12))
    return jnp.clip(x + delta, 0.0, 1.0) - x


def _step(g, step_size, norm: str):
    if norm == "linf":
        return step_size * jnp.sign(g)
    return step_size * g / jnp.maximum(_per_image_norm(g), 1e-12)


def _random_start(key, x, eps, norm: str):
    if norm == "linf":
        return jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)
    d = jax.random.normal(key, x.shape)
    r = jax.random.uniform(jax.random.fold_in(key, 1), (x.shape[0],) + (1,) * (x.ndim - 1))
    n = x[0].size
    return d / jnp.maximum(_per_image_norm(d), 1e-12) * eps * r ** (1.0 / n)   # uniform in the L2 ball


def perturb(model, variables, x, labels, key, *, eps, steps: int, step_size, norm: str = "linf",
            random_start: bool = True, target=None):
    """PGD as a traceable function with no checks: x + delta for use inside other compiled code
    (adversarial training calls it in the train step)."""
    delta = _random_start(key, x, eps, norm) if random_start else jnp.zeros_like(x)
    delta = project(delta, x, eps, norm)

    def body(_, delta):
        g = _grad(model, variables, x + delta, labels, target)
        return project(delta + _step(g, step_size, norm), x, eps, norm)

    return x + cpu.fori_loop(steps, body, delta)


@functools.partial(cpu.jit, static_argnames=("model", "steps", "norm", "random_start", "restarts"))
def _pgd(model, variables, x, labels, target, key, eps, step_size, *, steps, norm, random_start, restarts):
    def one_restart(key):
        adv = perturb(model, variables, x, labels, key, eps=eps, steps=steps, step_size=step_size, norm=norm,
                      random_start=random_start, target=target)
        delta = adv - x
        return delta, _loss(model, variables, adv, labels, target), _fooled(model, variables, adv, labels, target)

    def keep_better(best, key):
        delta, loss, ok = one_restart(key)
        b_delta, b_loss, b_ok = best
        better = (ok & ~b_ok) | ((ok == b_ok) & (loss > b_loss))
        pick = lambda new, old: jnp.where(better.reshape(-1, *([1] * (new.ndim - 1))), new, old)
        return (pick(delta, b_delta), pick(loss, b_loss), ok | b_ok), None

    keys = jax.random.split(key, restarts)
    first = one_restart(keys[0])
    (delta, _, _), _ = jax.lax.scan(keep_better, first, keys[1:])
    return x + delta


def _fooled(model, variables, x, labels, target):
    pred = jnp.argmax(clean_logits(model, variables, x), axis=-1)
    return pred != labels if target is None else pred == target


@functools.partial(cpu.jit, static_argnames=("model",))
def _summary(model, variables, x, adv, labels, target):
    pred = jnp.argmax(clean_logits(model, variables, adv), axis=-1)
    ok = pred != labels if target is None else pred == target
    d = (adv - x).reshape(x.shape[0], -1)
    return ok, jnp.max(jnp.abs(d), axis=1), jnp.sqrt(jnp.sum(d * d, axis=1)), pred


def _result(model, variables, x, adv, labels, target) -> AttackResult:
    ok, linf, l2, pred = jax.device_get(_summary(model, variables, x, adv, labels, target))
    return AttackResult(adv, ok, linf, l2, pred)


def pgd(model, variables, x, labels, *, eps: float, steps: int = 10, step_size: float | None = None,
        norm: str = "linf", target=None, random_start: bool = True, restarts: int = 1, key: int = 0) -> AttackResult:
    """Projected gradient descent (Madry et al. 2018) under the L-inf or L2 ``norm`` with budget ``eps``.

    step_size defaults to 2.5 * eps / steps. Restarts keep, per example, the
    first successful (else highest-loss) perturbation.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; valid: linf, l2")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    x, labels, target = problem.attack_batch(model, variables, x, labels, target, eps)
    variables = problem.fixed_weights(variables)   # fixed weights: their transforms made once
    step_size = 2.5 * eps / steps if step_size is None else step_size
    adv = _pgd(model, variables, x, labels, target, jax.random.key(key), jnp.float32(eps), jnp.float32(step_size),
               steps=steps, norm=norm, random_start=random_start, restarts=restarts)
    return _result(model, variables, x, adv, labels, target)


def fgsm(model, variables, x, labels, *, eps: float, target=None) -> AttackResult:
    """Fast gradient sign method (Goodfellow et al. 2015): one L-inf step of size eps."""
    return pgd(model, variables, x, labels, eps=eps, steps=1, step_size=eps, target=target, random_start=False)


def bim(model, variables, x, labels, *, eps: float, steps: int = 10, step_size: float | None = None,
        target=None) -> AttackResult:
    """Basic iterative method (Kurakin et al. 2017): PGD without random start, step eps / steps by default."""
    return pgd(model, variables, x, labels, eps=eps, steps=steps, target=target, random_start=False,
               step_size=eps / steps if step_size is None else step_size)


# ---------------------------------------------------------------- Carlini-Wagner L2
def _cw_margin(model, variables, adv, labels, target, confidence):
    """max(Z_own - max_other Z, -confidence) (untargeted) or max(max_other Z - Z_target, -confidence)."""
    z = clean_logits(model, variables, adv)
    cls = labels if target is None else target
    own = jnp.take_along_axis(z, cls[:, None], 1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(cls, z.shape[-1]) > 0, -jnp.inf, z), axis=-1)
    return jnp.maximum(own - other if target is None else other - own, -confidence)


@cpu.jit
def _cw_init(x):
    w0 = jnp.arctanh(jnp.clip(x * 2 - 1, -1 + 1e-6, 1 - 1e-6))
    return w0, optax.adam(0.0).init(w0), jnp.copy(x), jnp.full((x.shape[0],), jnp.inf, jnp.float32)


def _cw_step(consts, carry, _, *, model):
    """One Adam step in tanh space on ||delta||^2 + c * margin, keeping each example's smallest successful
    perturbation."""
    variables, x, labels, target, c, confidence, lr = consts
    w, opt_state, best, best_dist = carry

    def loss(w):
        adv = (jnp.tanh(w) + 1) / 2
        dist = jnp.sum(jnp.square(adv - x).reshape(x.shape[0], -1), axis=1)
        return jnp.sum(dist + c * _cw_margin(model, variables, adv, labels, target, confidence)), (adv, dist)

    (_, (adv, dist)), g = jax.value_and_grad(loss, has_aux=True)(w)
    ok = _fooled(model, variables, adv, labels, target)
    better = ok & (dist < best_dist)
    best = jnp.where(better[:, None, None, None], adv, best)
    best_dist = jnp.where(better, dist, best_dist)
    updates, opt_state = optax.adam(lr).update(g, opt_state, w)
    return (optax.apply_updates(w, updates), opt_state, best, best_dist), None


_cw_loop = problem.Ascent(_cw_step)


def carlini_wagner(model, variables, x, labels, *, target=None, c: float = 1.0, confidence: float = 0.0,
                   steps: int = 100, learning_rate: float = 0.01, binary_search_steps: int = 5) -> AttackResult:
    """Carlini & Wagner's L2 attack: Adam in tanh space on ||delta||^2 + c * margin, binary search on c per example.

    Returns the smallest-L2 successful perturbation found (the original image where none was).
    """
    x, labels, target = problem.attack_batch(model, variables, x, labels, target)
    variables = problem.fixed_weights(variables)
    b = x.shape[0]
    lo, hi = np.zeros(b), np.full(b, 1e10)
    cs = np.full(b, float(c))
    best, best_dist = np.array(x), np.full(b, np.inf)
    for _ in range(binary_search_steps):
        consts = (variables, x, labels, target, jnp.asarray(cs, jnp.float32), jnp.float32(confidence),
                  jnp.float32(learning_rate))
        (_, _, adv, dist), _ = _cw_loop(consts, _cw_init(x), length=steps, model=model)
        adv, dist = np.asarray(adv), np.asarray(dist)
        found = np.isfinite(dist)
        improve = found & (dist < best_dist)
        best[improve], best_dist[improve] = adv[improve], dist[improve]
        hi = np.where(found, np.minimum(hi, cs), hi)
        lo = np.where(found, lo, np.maximum(lo, cs))
        cs = np.where(hi < 1e9, (lo + hi) / 2, cs * 10)
    return _result(model, variables, x, jnp.asarray(best), labels, target)


# ---------------------------------------------------------------- DeepFool
@functools.partial(cpu.jit, static_argnames=("model", "candidates"))
def _deepfool_init(model, variables, x, *, candidates):
    logits0 = clean_logits(model, variables, x)
    cand = jax.lax.top_k(logits0, candidates)[1]                     # (B, K): the original class first
    return jnp.argmax(logits0, -1), cand, (jnp.zeros_like(x), jnp.ones(x.shape[0], bool))


def _deepfool_step(consts, carry, _, *, model, candidates):
    """One linearisation: the smallest L2 step to the nearest candidate's boundary, for examples still
    classified as their original class."""
    variables, x, overshoot, orig, cand = consts
    r_total, active = carry
    adv = jnp.clip(x + (1 + overshoot) * r_total, 0, 1)

    def picked(a, k):
        return jnp.sum(jnp.take_along_axis(clean_logits(model, variables, a), cand[:, k:k + 1], 1))

    vals = jnp.take_along_axis(clean_logits(model, variables, adv), cand, 1)          # (B, K)
    gs = jnp.stack([jax.grad(picked)(adv, k) for k in range(candidates)], 1)    # (B, K, H, W, C)
    f = vals[:, 1:] - vals[:, :1]                                   # (B, K-1) <= 0 while not fooled
    w = gs[:, 1:] - gs[:, :1]
    wn = jnp.sqrt(jnp.sum(jnp.square(w.reshape(w.shape[0], w.shape[1], -1)), -1)) + 1e-8
    dist = jnp.abs(f) / wn
    k = jnp.argmin(dist, axis=1)
    wk = jnp.take_along_axis(w, k[:, None, None, None, None], 1)[:, 0]
    step = (jnp.take_along_axis(dist, k[:, None], 1)[:, 0] + 1e-4) / jnp.take_along_axis(wn, k[:, None], 1)[:, 0]
    r = step[:, None, None, None] * wk
    pred = jnp.argmax(clean_logits(model, variables, adv), -1)
    active = active & (pred == orig)
    return (r_total + jnp.where(active[:, None, None, None], r, 0.0), active), None


_deepfool_loop = problem.Ascent(_deepfool_step)


def deepfool(model, variables, x, labels, *, max_iter: int = 50, overshoot: float = 0.02,
             candidates: int = 10) -> AttackResult:
    """DeepFool (Moosavi-Dezfooli et al. 2016): the smallest L2 step to the nearest linearised boundary,
    repeated until the prediction changes; ``candidates`` highest-scoring classes are considered. Untargeted."""
    x, labels, _ = problem.attack_batch(model, variables, x, labels)
    variables = problem.fixed_weights(variables)
    k = min(candidates, problem.num_classes(model, variables, x.shape))
    orig, cand, carry = _deepfool_init(model, variables, x, candidates=k)
    # every example off its original class: the remaining steps would add nothing
    settled = lambda carry, *_: not bool(jnp.any(carry[1]))
    (r_total, _), _ = _deepfool_loop((variables, x, jnp.float32(overshoot), orig, cand), carry, length=max_iter,
                                     after=settled, model=model, candidates=k)
    return _result(model, variables, x, jnp.clip(x + (1 + overshoot) * r_total, 0, 1), labels, None)


ATTACKS = {"fgsm": fgsm, "bim": bim, "pgd": pgd, "cw": carlini_wagner, "deepfool": deepfool}
