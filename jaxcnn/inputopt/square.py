"""The Square attack (Andriushchenko et al. 2020): black-box random search with square updates, L-inf and L2.

It reads only the logits (no gradient), so it is AutoAttack's check that the gradient-based attacks
were not fooled by masked gradients. Per example it keeps the point with the smallest margin
z_y - max_{i != y} z_i found so far and proposes, per query, a change inside one random square of
side s, accepted when it lowers the margin; it stops at the first misclassification.

* L-inf: start at vertical stripes x + eps * (+-1 per column and channel); a query sets the square to
  the opposite vertex with one random sign per channel (x_best + 2 eps sign, projected).
* L2: start at a 5 x 5 grid of squares filled with ``eta_pattern`` (two opposite-signed humps) times a
  random sign per channel, rescaled to norm eps; a query moves the mass of a second random square into
  the first, refilled with a fresh signed pattern, and the whole perturbation is rescaled to eps.
* The square's side follows AutoAttack's schedule (``square_sizes``: p = 0.8 halving after 10, 50, 200,
  500, 1000, 2000, 4000, 6000 and 8000 queries, side round(sqrt(p H W)), odd and at least 3 under L2).

As AutoAttack's ``square.py`` with ``resc_schedule=False`` (its standard version, 5000 queries, one
restart), except that each example draws its own squares and signs (the reference draws one square
and, under L-inf, one set of signs per query for the whole batch), so an example's result does not
depend on its batch.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu
from jaxcnn.inputopt import passes, problem

P_INIT = 0.8
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


# ---------------------------------------------------------------- the schedule and the L2 pattern
def p_fraction(i: int, p_init: float = P_INIT) -> float:
    """The fraction of the image a square covers at query ``i`` (0-based)."""
    return p_init / 2 ** sum(i > t for t in _HALVINGS)


def square_sizes(queries: int, height: int, width: int, norm: str, p_init: float = P_INIT) -> np.ndarray:
    """The square's side (queries,) int32 at each query."""
    out = np.empty(queries, np.int32)
    for i in range(queries):
        s = int(round(math.sqrt(p_fraction(i, p_init) * height * width)))
        if norm == "l2":
            s = max(s, 3)
            s += s % 2 == 0
        out[i] = min(max(s, 1), height, width)
    return out


def eta_rectangle(rows: int, cols: int) -> np.ndarray:
    """Nested rectangles around the centre (rows // 2, cols // 2), ring k weighted 1 / (k + 1)^2 and summed,
    unit L2 norm: a cell at ring r holds sum_{k=r}^{K-1} 1 / (k + 1)^2, K = max(rows, cols) // 2 + 1."""
    if rows == 0:
        return np.zeros((0, cols))
    k = max(rows // 2 + 1, cols // 2 + 1)
    tail = np.cumsum(1.0 / np.arange(k, 0, -1) ** 2)[::-1]          # tail[r] = sum_{j=r}^{k-1} 1 / (j + 1)^2
    ring = np.maximum(np.abs(np.arange(rows)[:, None] - rows // 2), np.abs(np.arange(cols)[None, :] - cols // 2))
    v = tail[ring]
    return v / np.sqrt(np.sum(v * v))


def eta_pattern(s: int) -> np.ndarray:
    """The L2 attack's s x s update: a rectangle pattern on the top s // 2 rows, its negative below, unit norm."""
    v = np.concatenate([eta_rectangle(s // 2, s), -eta_rectangle(s - s // 2, s)])
    return v / np.sqrt(np.sum(v * v))


def _pattern_table(sizes) -> tuple[np.ndarray, dict]:
    """The patterns of ``sizes`` zero-padded to the largest: (n, S, S) float32 and size -> row."""
    sizes = sorted(set(int(s) for s in sizes))
    big = max(sizes)
    table = np.zeros((len(sizes), big, big), np.float32)
    for i, s in enumerate(sizes):
        table[i, :s, :s] = eta_pattern(s)
    return table, {s: i for i, s in enumerate(sizes)}


@functools.lru_cache(maxsize=16)
def _schedule(queries: int, height: int, width: int, norm: str, p_init: float):
    """(the side at each query, the pattern table, each query's row in it), once per budget and image size
    rather than per batch; the L-inf attack uses no pattern (a 1 x 1 x 1 table)."""
    sizes = square_sizes(queries, height, width, norm, p_init)
    if norm != "l2":
        return sizes, np.zeros((1, 1, 1), np.float32), np.zeros(queries, np.int32)
    table, rows = _pattern_table(sizes)
    return sizes, table, np.array([rows[s] for s in sizes], np.int32)


def _grid(height: int, width: int):
    """The L2 start's grid of squares of side h // 5 from (h - 5 s) // 2 (AutoAttack's layout): per pixel the
    square's number (-1 outside) and the pixel's row and column inside it."""
    s = height // 5
    first = (height - 5 * s) // 2
    cell = np.full((height, width), -1, np.int32)
    local_r, local_c = np.zeros((height, width), np.int32), np.zeros((height, width), np.int32)
    n = 0
    for a in range(height // s):
        for b in range(width // s):
            r0, c0 = first + a * s, first + b * s
            rows, cols = min(s, height - r0), min(s, width - c0)
            cell[r0:r0 + rows, c0:c0 + cols] = n
            local_r[r0:r0 + rows, c0:c0 + cols] = np.arange(rows)[:, None]
            local_c[r0:r0 + rows, c0:c0 + cols] = np.arange(cols)[None, :]
            n += 1
    return s, cell, local_r, local_c, n


# ---------------------------------------------------------------- the compiled run
def _margin(model, variables, x, labels):
    z = problem.logits(model, variables, x)
    own = jnp.take_along_axis(z, labels[:, None], 1)[:, 0]
    return own - jnp.max(jnp.where(jax.nn.one_hot(labels, z.shape[-1], dtype=bool), -jnp.inf, z), -1)


def _signs(key, shape, dtype):
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(dtype)


def _l2_unit(v):
    return v / (jnp.sqrt(jnp.sum(v * v, axis=(1, 2, 3), keepdims=True)) + 1e-12)


@functools.partial(cpu.jit, static_argnames=("model", "norm", "sharding"))
def _init(model, variables, x, labels, key, index, eps, *, norm, sharding):
    b, h, w, ch = x.shape
    keys = passes.example_keys(key, index)
    draw = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    if norm == "linf":
        stripes = jax.vmap(lambda k: _signs(k, (1, w, ch), x.dtype))(draw[:, 0])
        start = jnp.clip(x + eps * stripes, 0.0, 1.0)
    else:
        s, cell, lr, lc, n = _grid(h, w)
        pattern = jnp.asarray(eta_pattern(s), x.dtype)
        flip = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (n,)))(draw[:, 0])          # (B, n)
        sign = jax.vmap(lambda k: _signs(k, (n, ch), x.dtype))(draw[:, 1])                 # (B, n, C)
        inside = jnp.asarray(cell >= 0)
        c = jnp.asarray(np.maximum(cell, 0))
        lr, lc = jnp.asarray(lr), jnp.asarray(lc)
        value = jnp.where(flip[:, c], pattern[lc, lr], pattern[lr, lc])
        delta = jnp.where(inside[None, :, :, None], value[..., None] * sign[:, c], 0.0)
        start = jnp.clip(x + _l2_unit(delta) * eps, 0.0, 1.0)
    carry = dict(x_best=start, margin=_margin(model, variables, start, labels))
    return problem.place((carry, keys), sharding, b)


def _window(corner_r, corner_c, s, h, w):
    """(B, H, W) masks of the squares with top-left corners (B,) and side s, and each pixel's place in them."""
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    lr, lc = rows - corner_r[:, None, None], cols - corner_c[:, None, None]
    return (lr >= 0) & (lr < s) & (lc >= 0) & (lc < s), lr, lc


def _step(consts, carry, sched, *, model, norm, sharding):
    variables, x, labels, keys, eps, table = consts
    i, s, row = sched
    b, h, w, ch = x.shape
    x_best, margin = carry["x_best"], carry["margin"]
    k = jax.vmap(lambda e: jax.random.split(jax.random.fold_in(e, i), 7))(keys)
    corner = lambda j, n: jax.vmap(lambda kk: jax.random.randint(kk, (), 0, jnp.maximum(n - s, 1)))(k[:, j])
    sign = jax.vmap(lambda kk: _signs(kk, (1, 1, ch), x.dtype))(k[:, 4])
    m1, lr, lc = _window(corner(0, h), corner(1, w), s, h, w)
    m1 = m1[..., None]
    if norm == "linf":
        x_new = jnp.clip(jnp.clip(x_best + m1 * (2 * eps) * sign, x - eps, x + eps), 0.0, 1.0)
    else:
        m2 = _window(corner(2, h), corner(3, w), s, h, w)[0][..., None]
        flip = jax.vmap(lambda kk: jax.random.bernoulli(kk, 0.5))(k[:, 5])[:, None, None]
        tab = table[row]
        big = tab.shape[0] - 1
        lr, lc = jnp.clip(lr, 0, big), jnp.clip(lc, 0, big)
        fresh = jnp.where(flip, tab[lc, lr], tab[lr, lc])[..., None] * m1 * sign
        delta = x_best - x
        spatial = lambda v: jnp.sqrt(jnp.sum(v * v, axis=(1, 2), keepdims=True))
        n_image = jnp.sqrt(jnp.sum(delta * delta, axis=(1, 2, 3), keepdims=True))
        n_windows = spatial(delta * jnp.maximum(m1, m2))
        moved = fresh + delta * m1 / (1e-12 + spatial(delta * m1))
        moved = moved / (1e-12 + spatial(moved)) * jnp.sqrt(jnp.maximum(eps * eps - n_image ** 2, 0.0) / ch
                                                              + n_windows ** 2)
        delta = jnp.where(m1, moved, jnp.where(m2, 0.0, delta))
        x_new = jnp.clip(x + _l2_unit(delta) * eps, 0.0, 1.0)
    new_margin = _margin(model, variables, x_new, labels)
    better = (margin > 0) & (new_margin < margin)
    new = dict(x_best=jnp.where(better[:, None, None, None], x_new, x_best),
               margin=jnp.where(better, new_margin, margin))
    return problem.place(new, sharding, b), None


_loop = problem.Ascent(_step)


def _chunk(queries: int) -> int:
    """Queries per call off the CPU fast path: the largest divisor of ``queries`` up to 100 (an early stop's
    granularity)."""
    return max(d for d in range(1, min(queries, 100) + 1) if queries % d == 0)


def run_square(model, variables, x, labels, key, index, *, eps: float, norm: str, queries: int = 5000,
               p_init: float = P_INIT):
    """The Square attack on one batch: (adv (B, H, W, 3), fooled (B,)); stops once every example is fooled."""
    b, h, w, _ = x.shape
    sharding = problem.batch_sharding(b)
    sizes, table, rows = _schedule(queries, h, w, norm, float(p_init))
    x, labels, index = problem.shard_batch(x, labels, index)
    eps_ = jnp.asarray(eps, x.dtype)
    carry, keys = _init(model, variables, x, labels, key, index, eps_, norm=norm, sharding=sharding)
    sched = jax.device_put((np.arange(queries, dtype=np.int32), sizes, rows))
    every = _chunk(queries)
    done = lambda c, _, steps: steps % every == 0 and not bool(jnp.any(c["margin"] > 0))
    carry, _ = _loop((variables, x, labels, keys, eps_, jnp.asarray(table, x.dtype)), carry, sched, chunk=every,
                     after=done, model=model, norm=norm, sharding=sharding)
    return carry["x_best"], carry["margin"] <= 0


def square_passes(model, variables, *, eps, norm, queries=5000, restarts=1, p_init=P_INIT) -> list[passes.Pass]:
    def run(x, labels, index, key):
        return run_square(model, variables, x, labels, key, index, eps=eps, norm=norm, queries=queries, p_init=p_init)

    return [passes.Pass("square", run) for _ in range(restarts)]


def square(model, variables, x, labels, *, eps: float, norm: str = "linf", queries: int = 5000, restarts: int = 1,
           p_init: float = P_INIT, seed: int = 0, batch_size: int = 256) -> passes.AttackResult:
    """The Square attack over images (N, H, W, 3) in [0, 1] (at least 5 px a side under L2)."""
    x, labels, _ = passes.check_inputs(model, variables, x, labels, eps, norm)
    passes.check_counts(queries=queries, restarts=restarts)
    check_size(x.shape, norm)
    variables = problem.fixed_weights(variables)
    plan = square_passes(model, variables, eps=eps, norm=norm, queries=queries, restarts=restarts, p_init=p_init)
    out = passes.run_passes(plan, model, variables, x, labels, key=passes.seed_key(seed), batch_size=batch_size)
    return passes.attack_result(out, x)


def check_size(shape, norm: str) -> None:
    if norm == "l2" and min(shape[1:3]) < 5:
        raise ValueError(f"the L2 Square attack needs images of at least 5 x 5 pixels, got {shape[1]} x {shape[2]}")
