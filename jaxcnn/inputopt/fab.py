"""FAB-T (Croce & Hein 2020): the targeted fast adaptive boundary attack under the L-inf and L2 norms.

A minimum-norm attack: each step linearises the margin z_t - z_y towards a target class t at the
current point x_k, projects both x_k and the clean image x_0 onto that linearised boundary within
[0, 1] (``project_linf``, ``project_l2``: the smallest-norm step onto {z : w.z = b} inside the box),
and moves to the mix (1 - alpha)(x_k + eta d_k) + alpha (x_0 + eta d_0), alpha = |d_k| / (|d_k| + |d_0|)
capped at alpha_max = 0.1, extrapolating by eta = 1.05. A step that lands on an adversarial point
records it when it is the closest to x_0 so far, then backs off to x_0 + beta (x_k - x_0), beta = 0.9.
The attack succeeds where the closest adversarial point lies within eps (otherwise the clean image
is kept). As AutoAttack's ``fab_base.py`` in its standard version: targets the classes with the 2nd,
3rd ... highest clean logits (9), 100 steps, the first restart from x_0 itself and later ones from a
random point at half the budget.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcnn import cpu
from jaxcnn.inputopt import passes, problem
from jaxcnn.inputopt.apgd import ranked_class

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9


# ---------------------------------------------------------------- projections onto a hyperplane in the box
# Both projections solve a monotone piecewise-linear equation h(lam) = c per row. The reference sorts
# each row's breakpoints; sorting is slow on the CPU (``benchmarks/cpu/fab_projection.py`` times both
# ways), so the segment holding the root is found by bisection on
# lam instead (a fixed number of halvings: the bracket ends below the dtype's resolution), and lam is
# then solved exactly on that segment, which gives the sorted solution up to rounding.
def _oriented(t, w, b):
    """w flipped per row so that c = w.t - b >= 0: the step must lower w.z by c."""
    c = jnp.sum(w * t, axis=1) - b
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    return w * sign[:, None], c * sign


def _halvings(dtype) -> int:
    return 64 if jnp.dtype(dtype) == jnp.float64 else 40


def _solve(c, slope, bound, lo, hi, *, log: bool):
    """The root lam of h(lam) = sum_i slope_i min(lam, bound_i) = c in [lo, hi] (rows), by bisection (on log lam
    when ``log``) and an exact solve on the bracketed segment."""
    def h(lam):
        return jnp.sum(slope * jnp.minimum(lam[:, None], bound), axis=1)

    def halve(_, bracket):
        a, b = bracket
        mid = (a + b) / 2
        above = h(jnp.exp(mid) if log else mid) > c
        return jnp.where(above, a, mid), jnp.where(above, mid, b)

    tiny = jnp.finfo(c.dtype).tiny
    a, b = (jnp.log(jnp.maximum(lo, tiny)), jnp.log(jnp.maximum(hi, tiny))) if log else (lo, hi)
    a, _ = cpu.fori_loop(_halvings(c.dtype), halve, (a, jnp.maximum(a, b)))
    lo = jnp.exp(a) if log else a
    saturated = bound <= lo[:, None]
    free = jnp.sum(jnp.where(saturated, 0.0, slope), axis=1)
    spent = jnp.sum(jnp.where(saturated, slope * bound, 0.0), axis=1)
    return jnp.maximum(jnp.where(free > 0, (c - spent) / jnp.where(free > 0, free, 1.0), lo), 0.0)


def project_linf(t, w, b):
    """The smallest L-inf step d (N, D) with w.(t + d) = b and t + d in [0, 1] (the furthest box corner when no
    step reaches the hyperplane), for points t (N, D) in [0, 1], normals w (N, D), offsets b (N,).

    Coordinate i moves towards the corner a_i that lowers w.z (1 where w_i < 0, else 0) by min(lam, p_i),
    p_i = |a_i - t_i| its room: lam solves sum_i |w_i| min(lam, p_i) = c, between c / sum |w| and max p.
    """
    w, c = _oriented(t, w, b)
    a = (w < 0).astype(t.dtype)
    p = jnp.abs(a - t)
    aw = jnp.abs(w)
    total = jnp.sum(aw, axis=1)
    lam = _solve(c, aw, p, c / jnp.where(total > 0, total, 1.0), jnp.max(p, axis=1), log=False)
    reachable = c < jnp.sum(aw * p, axis=1)
    d = jnp.where(reachable[:, None], (2 * a - 1) * jnp.minimum(lam[:, None], p), a - t)
    return d * (w != 0)


def l2_bounds(t, w, b):
    """The L2 projection's pieces: w oriented and c (``_oriented``), the coordinates that move (|w_i| > 1e-8),
    the alpha r_i at which coordinate i reaches its bound, and w_i^2 (0 where it does not move)."""
    w, c = _oriented(t, w, b)
    live = jnp.abs(w) > 1e-8
    safe = jnp.where(live, w, 1.0)
    r = jnp.where(live, jnp.maximum(t / safe, (t - 1) / safe), 0.0)
    return w, c, live, r, jnp.where(live, w * w, 0.0)


def project_l2(t, w, b):
    """The smallest L2 step d (N, D) with w.(t + d) = b and t + d in [0, 1] (as far as the box allows).

    d_i = -alpha w_i clipped at coordinate i's bound, which it reaches at alpha = r_i; alpha solves
    sum_i w_i^2 min(alpha, r_i) = c, between c / sum w^2 and max r (bisected on log alpha: r spans many
    orders of magnitude). Coordinates with |w_i| <= 1e-8 do not move.
    """
    w, c, live, r, w2 = l2_bounds(t, w, b)
    total = jnp.sum(w2, axis=1)
    alpha = _solve(c, w2, r, c / jnp.where(total > 0, total, 1.0), jnp.max(r, axis=1), log=True)
    bound = -r * w
    reachable = c <= jnp.sum(w2 * r, axis=1)
    d = jnp.where(reachable[:, None] & (alpha[:, None] <= r), -alpha[:, None] * w, bound)
    return d * live


def _size(v, norm: str):
    """Per-row norms of v (N, D)."""
    return jnp.max(jnp.abs(v), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(v * v, axis=1))


# ---------------------------------------------------------------- the compiled run
@functools.partial(cpu.jit, static_argnames=("norm", "sharding"))
def _init(x, key, index, eps, *, norm, sharding):
    """The loop's state from x itself (``key`` None), or from a random point at half the budget (restarts)."""
    start = x
    if key is not None:
        keys = passes.example_keys(key, index)
        if norm == "linf":
            t = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0))(keys)
        else:
            t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
        start = jnp.clip(x + eps * 0.5 * t / _size(t.reshape(t.shape[0], -1), norm).reshape(-1, 1, 1, 1), 0.0, 1.0)
    carry = dict(x1=start, adv=x, best=jnp.full((x.shape[0],), 1e10, x.dtype))
    return problem.place(carry, sharding, x.shape[0])


def _step(consts, c, _, *, model, norm, sharding):
    variables, x0, labels, target = consts
    b = x0.shape[0]

    def margin(x):
        z = problem.logits(model, variables, x)
        pick = lambda k: jnp.take_along_axis(z, k[:, None], 1)[:, 0]
        per = pick(target) - pick(labels)
        return jnp.sum(per), per

    (_, df), dg = jax.value_and_grad(margin, has_aux=True)(c["x1"])
    project = project_linf if norm == "linf" else project_l2
    w = dg.reshape(b, -1)
    x1f, x0f = c["x1"].reshape(b, -1), x0.reshape(b, -1)
    offset = jnp.sum(w * x1f, axis=1) - df
    d1, d0 = project(x1f, w, offset), project(x0f, w, offset)
    a1, a0 = jnp.maximum(_size(d1, norm), 1e-8), jnp.maximum(_size(d0, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a0), 0.0, ALPHA_MAX)[:, None]
    x1 = jnp.clip((x1f + ETA * d1) * (1 - alpha) + (x0f + ETA * d0) * alpha, 0.0, 1.0).reshape(x0.shape)
    fooled = jnp.argmax(problem.logits(model, variables, x1), -1) != labels
    dist = _size((x1 - x0).reshape(b, -1), norm)
    closer = fooled & (dist < c["best"])
    pick = lambda m, new, old: jnp.where(m.reshape(-1, 1, 1, 1), new, old)
    new = dict(x1=pick(fooled, x0 + (x1 - x0) * BETA, x1), adv=pick(closer, x1, c["adv"]),
               best=jnp.where(closer, dist, c["best"]))
    return problem.place(new, sharding, b), None


_loop = problem.Ascent(_step)


def run_fab_targeted(model, variables, x, labels, target, *, eps: float, norm: str, steps: int = 100, key=None,
                     index=None):
    """FAB-T on one batch towards ``target`` (B,): (adv (B, H, W, 3), fooled (B,), smallest norm found (B,),
    1e10 where none). ``key`` and ``index``: a random start at half the budget (else x itself)."""
    b = x.shape[0]
    sharding = problem.batch_sharding(b)
    x, labels, target, index = problem.shard_batch(x, labels, target, index)
    eps_ = jnp.asarray(eps, x.dtype)
    carry = _init(x, key, index, eps_, norm=norm, sharding=sharding)
    carry, _ = _loop((variables, x, labels, target), carry, length=steps, model=model, norm=norm, sharding=sharding)
    fooled = carry["best"] <= eps_
    return jnp.where(fooled.reshape(-1, 1, 1, 1), carry["adv"], x), fooled, carry["best"]


def fab_targeted_passes(model, variables, *, eps, norm, steps=100, targets=9, restarts=1,
                        num_classes: int) -> list[passes.Pass]:
    """FAB-T: for each of the ``targets`` classes ranked 2nd, 3rd ... by the clean logits, ``restarts`` runs
    (the first from the clean image, the others from random points)."""
    def make(rank, restart):
        def run(x, labels, index, key):
            target = ranked_class(model, variables, x, jnp.int32(rank))
            adv, fooled, _ = run_fab_targeted(model, variables, x, labels, target, eps=eps, norm=norm, steps=steps,
                                              key=key if restart else None, index=index if restart else None)
            return adv, fooled
        return passes.Pass("fab-t", run)

    return [make(r, k) for r in range(1, min(targets, num_classes - 1) + 1) for k in range(restarts)]


def fab_targeted(model, variables, x, labels, *, eps: float, norm: str = "linf", steps: int = 100,
                 targets: int = 9, restarts: int = 1, seed: int = 0, batch_size: int = 256) -> passes.AttackResult:
    """FAB-T over images (N, H, W, 3) in [0, 1]: success where the closest adversarial point found towards one
    of the ``targets`` classes lies within ``eps``."""
    x, labels, n = passes.check_inputs(model, variables, x, labels, eps, norm)
    passes.check_counts(steps=steps, targets=targets, restarts=restarts)
    passes.check_num_classes(n, 2, "FAB-T")
    variables = problem.fixed_weights(variables)
    plan = fab_targeted_passes(model, variables, eps=eps, norm=norm, steps=steps, targets=targets,
                               restarts=restarts, num_classes=n)
    out = passes.run_passes(plan, model, variables, x, labels, key=passes.seed_key(seed), batch_size=batch_size)
    return passes.attack_result(out, x)
