"""APGD (Croce & Hein 2020): PGD with momentum and a step size halved at checkpoints; CE and DLR losses.

The published algorithm as AutoAttack's reference implementation runs it (``autopgd_base.py``),
under the L-inf and L2 norms:

* start: a random point of the ball's surface direction (L-inf: x + eps * u / max|u|, u uniform in
  [-1, 1]; L2: x + eps * g / |g|, g Gaussian), clipped to [0, 1]; step size 2 * eps per example;
* step: z = P(x_k + step * s(grad)) (s = sign under L-inf, grad / |grad| under L2), then
  x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})) with momentum a = 0.75 (1 at the first step),
  P the projection on the ball and [0, 1];
* checkpoints after windows of 22%, 19%, 16% ... of the iterations, never shorter than 6%
  (``checkpoints``): the step size halves, and the iterate and gradient go back to the best point so far,
  for an example whose loss rose in at most 75% of the window's steps, or whose step size did not halve
  at the previous checkpoint while its best loss did not improve since. As in the reference, the first
  window's first step is compared with 0 (the loss before it is not recorded);
* losses: cross-entropy, DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), and APGD-T's targeted DLR =
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (z_pi sorted decreasingly), ascended;
* an example counts as fooled if any iterate (the start included) is misclassified; its adversarial
  image is the last misclassified iterate.

APGD-T attacks, one pass after the other, the classes with the 2nd, 3rd ... highest clean logits
(9 by default, AutoAttack's standard version). ``run_apgd`` is the compiled run on one batch from a
given start (any float dtype: the float64 checks against the reference feed it float64); ``apgd`` and
``apgd_targeted`` run it over a set, on the examples still robust (``passes``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import cpu
from jaxcnn.inputopt import passes, problem

RHO = 0.75          # the fraction of rising steps below which a window halves the step size
MOMENTUM = 0.75
LOSSES = ("ce", "dlr", "dlr-targeted")


# ---------------------------------------------------------------- losses
def dlr_loss(logits, labels):
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12) per example (B,); needs 3 or more classes."""
    zs = jnp.sort(logits, axis=-1)
    zy = jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
    other = jnp.where(jnp.argmax(logits, -1) == labels, zs[:, -2], zs[:, -1])
    return -(zy - other) / (zs[:, -1] - zs[:, -3] + 1e-12)


def dlr_targeted_loss(logits, labels, target):
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) per example (B,); needs 4 or more classes."""
    zs = jnp.sort(logits, axis=-1)
    zy = jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
    zt = jnp.take_along_axis(logits, target[:, None], 1)[:, 0]
    return -(zy - zt) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def per_example_loss(loss: str, logits, labels, target):
    if loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if loss == "dlr":
        return dlr_loss(logits, labels)
    return dlr_targeted_loss(logits, labels, target)


# ---------------------------------------------------------------- the schedule
def checkpoints(steps: int) -> list[tuple[int, int]]:
    """(iteration index, window length) of each checkpoint: windows of max(int(0.22 n), 1) steps, each
    max(int(0.03 n), 1) shorter than the previous one, never shorter than max(int(0.06 n), 1)."""
    k, shortest, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, i = [], k - 1
    while i < steps:
        out.append((i, k))
        k = max(k - decrease, shortest)
        i += k
    return out


def _schedule(steps: int):
    """Per step: the momentum (1 at the first step), whether it ends a window, the window's length."""
    momentum = np.full(steps, MOMENTUM, np.float32)
    momentum[0] = 1.0
    check, window = np.zeros(steps, bool), np.zeros(steps, np.int32)
    for i, k in checkpoints(steps):
        check[i], window[i] = True, k
    return momentum, check, window


# ---------------------------------------------------------------- norms and projections
def _per_example(v):
    return (-1,) + (1,) * (v.ndim - 1)


def l2_norm(v):
    """Per-example L2 norms (B, 1, 1, 1) of a batch (B, ...)."""
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def _normalize(v, norm: str):
    if norm == "linf":
        scale = jnp.max(jnp.abs(v), axis=tuple(range(1, v.ndim)), keepdims=True)
    else:
        scale = l2_norm(v)
    return v / (scale + 1e-12)


def _project(z, x, eps, norm: str):
    """z projected on the ``norm`` ball of radius eps around x, then on [0, 1] (the reference's order)."""
    if norm == "linf":
        return jnp.clip(jnp.clip(z, x - eps, x + eps), 0.0, 1.0)
    d = z - x
    return jnp.clip(x + _normalize(d, "l2") * jnp.minimum(eps, l2_norm(d)), 0.0, 1.0)


def random_start(key, index, x, eps, norm: str):
    """APGD's start for x (B, H, W, 3) from per-example keys (``passes.example_keys(key, index)``); traceable."""
    keys = passes.example_keys(key, index)
    if norm == "linf":
        t = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0))(keys)
    else:
        t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return jnp.clip(x + eps * _normalize(t, norm), 0.0, 1.0)


@functools.partial(cpu.jit, static_argnames=("model",))
def ranked_class(model, variables, x, rank):
    """The class with the (rank + 1)-th highest clean logit per example (B,): APGD-T's and FAB-T's targets."""
    order = jnp.argsort(-problem.logits(model, variables, x), axis=-1)
    return jnp.take_along_axis(order, jnp.broadcast_to(rank, (x.shape[0], 1)), 1)[:, 0].astype(jnp.int32)


# ---------------------------------------------------------------- the compiled run
def _loss_grad(model, variables, x, labels, target, loss: str):
    def total(x):
        logits = problem.logits(model, variables, x)
        per = per_example_loss(loss, logits, labels, target)
        return jnp.sum(per), (per, logits)

    (_, (per, logits)), grad = jax.value_and_grad(total, has_aux=True)(x)
    return per, grad, logits


@functools.partial(cpu.jit, static_argnames=("model", "norm", "loss", "sharding"))
def _init(model, variables, x, labels, target, start, key, index, eps, *, norm, loss, sharding):
    x_adv = random_start(key, index, x, eps, norm) if start is None else jnp.clip(start, 0.0, 1.0)
    per, grad, logits = _loss_grad(model, variables, x_adv, labels, target, loss)
    b = x.shape[0]
    carry = dict(x_adv=x_adv, x_old=x_adv, grad=grad, x_best=x_adv, grad_best=grad, loss_best=per,
                 x_best_adv=x_adv, robust=jnp.argmax(logits, -1) == labels,
                 step=jnp.full((b,), 2 * eps, x.dtype), loss_best_last=per, reduced_last=jnp.ones((b,), bool),
                 rises=jnp.zeros((b,), jnp.int32), loss_prev=jnp.zeros((b,), per.dtype))
    zero_grad = jnp.sum(jnp.abs(grad).reshape(b, -1), axis=1) == 0
    return problem.place(carry, sharding, b), per, zero_grad


def _step(consts, c, sched, *, model, norm, loss, sharding):
    variables, x, labels, target, eps = consts
    a, check, window = sched
    x_adv, step = c["x_adv"], c["step"].reshape(_per_example(x))
    move = jnp.sign(c["grad"]) if norm == "linf" else _normalize(c["grad"], "l2")
    z = _project(x_adv + step * move, x, eps, norm)
    a = a.astype(x.dtype)
    x_new = _project(x_adv + (z - x_adv) * a + (x_adv - c["x_old"]) * (1 - a), x, eps, norm)
    per, grad, logits = _loss_grad(model, variables, x_new, labels, target, loss)
    right = jnp.argmax(logits, -1) == labels
    pick = lambda m, new, old: jnp.where(m.reshape(_per_example(new)), new, old)
    better = per > c["loss_best"]
    x_best, grad_best = pick(better, x_new, c["x_best"]), pick(better, grad, c["grad_best"])
    loss_best = jnp.where(better, per, c["loss_best"])
    rises = c["rises"] + (per > c["loss_prev"])
    # the checkpoint (a no-op off the schedule's checkpoints)
    oscillating = rises <= window * RHO
    stalled = ~c["reduced_last"] & (c["loss_best_last"] >= loss_best)
    halve = check & (oscillating | stalled)
    new = dict(x_adv=pick(halve, x_best, x_new), x_old=x_adv, grad=pick(halve, grad_best, grad), x_best=x_best,
               grad_best=grad_best, loss_best=loss_best, x_best_adv=pick(~right, x_new, c["x_best_adv"]),
               robust=c["robust"] & right, step=jnp.where(halve, c["step"] / 2, c["step"]),
               loss_best_last=jnp.where(check, loss_best, c["loss_best_last"]),
               reduced_last=jnp.where(check, oscillating | stalled, c["reduced_last"]),
               rises=jnp.where(check, 0, rises), loss_prev=per)
    return problem.place(new, sharding, x.shape[0]), (per, new["step"])


_loop = problem.Ascent(_step)


@dataclasses.dataclass
class ApgdRun:
    """One APGD run on a batch: ``adv`` (B, H, W, 3) the last misclassified iterate (the start elsewhere),
    ``fooled`` (B,), ``x_best`` and ``loss_best`` (B,) the highest-loss point, ``losses`` (steps + 1, B) the
    loss at the start and after each step, ``step_sizes`` (steps, B) after each step's checkpoint,
    ``zero_grad`` (B,) a zero gradient at the start."""

    adv: jax.Array
    fooled: jax.Array
    x_best: jax.Array
    loss_best: jax.Array
    losses: jax.Array
    step_sizes: jax.Array
    zero_grad: jax.Array


def run_apgd(model, variables, x, labels, start=None, *, eps: float, norm: str, loss: str, steps: int,
             target=None, key=None, index=None) -> ApgdRun:
    """APGD on one batch x (B, H, W, 3), compiled once per model, shape and setting.

    The start: ``start`` (same shape as x), else ``random_start(key, index, ...)``. ``target`` (B,) the
    targeted DLR loss's classes. Arrays keep their dtype (float64 under ``jax.enable_x64`` for the
    checks against the reference)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; valid: {', '.join(LOSSES)}")
    b = x.shape[0]
    sharding = problem.batch_sharding(b)
    x, labels, start, target, index = problem.shard_batch(x, labels, start, labels if target is None else target,
                                                          index)
    eps = jnp.asarray(eps, x.dtype)
    carry, first_loss, zero_grad = _init(model, variables, x, labels, target, start, key, index, eps, norm=norm,
                                         loss=loss, sharding=sharding)
    sched = jax.device_put(_schedule(steps))       # on the device once, not sent with every step's call
    carry, (losses, sizes) = _loop((variables, x, labels, target, eps), carry, sched, model=model,
                                   norm=norm, loss=loss, sharding=sharding)
    return ApgdRun(carry["x_best_adv"], ~carry["robust"], carry["x_best"], carry["loss_best"],
                   jnp.concatenate([first_loss[None], losses]), sizes, zero_grad)


# ---------------------------------------------------------------- passes and the public attacks
def apgd_pass(model, variables, *, eps: float, norm: str, loss: str, steps: int, rank: int | None = None,
              name: str | None = None, flags: dict | None = None) -> passes.Pass:
    """One APGD run from a random start; ``rank`` r: the targeted DLR loss towards the class with the
    (r + 1)-th highest clean logit. ``flags["zero_gradient"]`` collects the indices of the examples with a zero
    gradient at the start (DLR losses, as AutoAttack checks)."""
    def run(x, labels, index, key):
        target = None if rank is None else ranked_class(model, variables, x, jnp.int32(rank))
        r = run_apgd(model, variables, x, labels, eps=eps, norm=norm, loss=loss, steps=steps, target=target, key=key,
                     index=index)
        if flags is not None and loss != "ce":
            # a set: the padding of a short last batch and later passes over the same example count once
            flags.setdefault("zero_gradient", set()).update(np.asarray(index)[np.asarray(r.zero_grad)].tolist())
        return r.adv, r.fooled

    default = "apgd-ce" if loss == "ce" else "apgd-t" if rank is not None else "apgd-dlr"
    return passes.Pass(name or default, run)


def apgd_passes(model, variables, *, eps, norm, loss="ce", steps=100, restarts=1, flags=None) -> list[passes.Pass]:
    return [apgd_pass(model, variables, eps=eps, norm=norm, loss=loss, steps=steps, flags=flags)
            for _ in range(restarts)]


def apgd_targeted_passes(model, variables, *, eps, norm, steps=100, targets=9, restarts=1, num_classes: int,
                         flags=None) -> list[passes.Pass]:
    """APGD-T: for each of the ``targets`` classes ranked 2nd, 3rd ... by the clean logits (at most the
    classes there are, minus one), ``restarts`` runs on the targeted DLR loss."""
    return [apgd_pass(model, variables, eps=eps, norm=norm, loss="dlr-targeted", steps=steps, rank=r, flags=flags)
            for r in range(1, min(targets, num_classes - 1) + 1) for _ in range(restarts)]


def apgd(model, variables, x, labels, *, eps: float, norm: str = "linf", loss: str = "ce", steps: int = 100,
         restarts: int = 1, seed: int = 0, batch_size: int = 256) -> passes.AttackResult:
    """Untargeted APGD on the cross-entropy (``loss="ce"``, APGD-CE) or DLR loss over images (N, H, W, 3)
    in [0, 1], ``restarts`` runs each on the examples still robust; batches of ``batch_size``."""
    x, labels, n = passes.check_inputs(model, variables, x, labels, eps, norm)
    if loss not in ("ce", "dlr"):
        raise ValueError(f"unknown APGD loss {loss!r}; valid: ce, dlr (apgd_targeted for the targeted DLR loss)")
    passes.check_counts(steps=steps, restarts=restarts)
    if loss == "dlr":
        passes.check_num_classes(n, 3, "the DLR loss")
    variables = problem.fixed_weights(variables)
    plan = apgd_passes(model, variables, eps=eps, norm=norm, loss=loss, steps=steps, restarts=restarts)
    out = passes.run_passes(plan, model, variables, x, labels, key=passes.seed_key(seed), batch_size=batch_size)
    return passes.attack_result(out, x)


def apgd_targeted(model, variables, x, labels, *, eps: float, norm: str = "linf", steps: int = 100,
                  targets: int = 9, restarts: int = 1, seed: int = 0, batch_size: int = 256) -> passes.AttackResult:
    """APGD-T: APGD on the targeted DLR loss towards each of the ``targets`` classes with the highest clean
    logits after the label's, one after the other on the examples still robust."""
    x, labels, n = passes.check_inputs(model, variables, x, labels, eps, norm)
    passes.check_counts(steps=steps, restarts=restarts, targets=targets)
    passes.check_num_classes(n, 4, "the targeted DLR loss")
    variables = problem.fixed_weights(variables)
    plan = apgd_targeted_passes(model, variables, eps=eps, norm=norm, steps=steps, targets=targets,
                                restarts=restarts, num_classes=n)
    out = passes.run_passes(plan, model, variables, x, labels, key=passes.seed_key(seed), batch_size=batch_size)
    return passes.attack_result(out, x)
