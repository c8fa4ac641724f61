"""FAB's projections onto a hyperplane in the box: a bisection on the root (``jaxcnn.inputopt.fab``) against the
sort of every row's breakpoints that the reference implementation does (written here the same way).

Rows of D = H * W * 3 values (16, 32, 64 and 224 px), the L-inf and L2 projections each, float32, one
process, alternating, medians of ``--repeats``; the maximum difference between the two answers is
printed beside the times (both solve the same equation; they differ by rounding).

    python -m benchmarks.cpu.fab_projection [--rows 64] [--sizes 16 32 64 224] [--repeats 10]
"""

from __future__ import annotations

import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.fab_projection"


def _sorted_linf(t, w, b):
    """The L-inf projection with sorted rooms: g(lam) at each breakpoint, the segment crossing c, lam on it."""
    import jax.numpy as jnp

    from jaxcnn.inputopt.fab import _oriented

    w, c = _oriented(t, w, b)
    a = (w < 0).astype(t.dtype)
    p = jnp.abs(a - t)
    order = jnp.argsort(-p, axis=1)
    ps, ws = jnp.take_along_axis(p, order, 1), jnp.take_along_axis(jnp.abs(w), order, 1)
    width = jnp.cumsum(ws, axis=1)
    rest = jnp.sum(ws * ps, axis=1, keepdims=True) - jnp.cumsum(ws * ps, axis=1)
    m = jnp.sum(ps * width + rest > c[:, None], axis=1)
    k = jnp.maximum(m - 1, 0)[:, None]
    lam = jnp.maximum((c - jnp.take_along_axis(rest, k, 1)[:, 0]) / jnp.take_along_axis(width, k, 1)[:, 0], 0)
    d = jnp.where((m == 0)[:, None], a - t, (2 * a - 1) * jnp.minimum(lam[:, None], p))
    return d * (w != 0)


def _sorted_l2(t, w, b):
    """The L2 projection with sorted bounds: F(alpha) at each bound, the segment crossing c, alpha on it."""
    import jax.numpy as jnp

    from jaxcnn.inputopt.fab import l2_bounds

    w, c, live, r, w2 = l2_bounds(t, w, b)
    order = jnp.argsort(r, axis=1)
    rs, w2s = jnp.take_along_axis(r, order, 1), jnp.take_along_axis(w2, order, 1)
    total = jnp.sum(w2s, axis=1, keepdims=True)
    tail = total - jnp.cumsum(w2s, axis=1)
    at = jnp.cumsum(w2s * rs, axis=1) + rs * tail
    m = jnp.sum(at < c[:, None], axis=1)
    k = jnp.maximum(m - 1, 0)[:, None]
    free = jnp.take_along_axis(tail, k, 1)[:, 0]
    inside = jnp.take_along_axis(rs, k, 1)[:, 0] + (c - jnp.take_along_axis(at, k, 1)[:, 0]) / jnp.maximum(free, 1e-30)
    alpha = jnp.where(m == 0, c / jnp.maximum(total[:, 0], 1e-30), inside)
    reachable = c <= jnp.sum(w2 * r, axis=1)
    d = jnp.where(reachable[:, None] & (alpha[:, None] <= r), -alpha[:, None] * w, -r * w)
    return d * live


def run(rows: int, sizes: list[int], repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.inputopt import fab

    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        d = size * size * 3
        t = jnp.asarray(rng.uniform(size=(rows, d)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(rows, d)), jnp.float32)
        b = jnp.sum(w * t, axis=1) + jnp.asarray(rng.normal(size=rows) * np.sqrt(d) * 0.1, jnp.float32)
        for norm, bisect, by_sort in (("linf", fab.project_linf, _sorted_linf), ("l2", fab.project_l2, _sorted_l2)):
            fns = {"bisection": jax.jit(bisect), "sort": jax.jit(by_sort)}
            gap = float(jnp.max(jnp.abs(fns["bisection"](t, w, b) - fns["sort"](t, w, b))))
            timing = harness.interleaved({k: (lambda f=f: f(t, w, b)) for k, f in fns.items()}, repeats)
            out.append({"norm": norm, "size": size, "rows": rows, "values": d, "max_difference": gap,
                        **{f"{k} ms": v.ms for k, v in timing.items()}, "timing": timing})
    print(harness.markdown(["norm", "rows x values", "bisection ms", "sort ms", "max |difference|"],
                           [[r["norm"], f"{r['rows']} x {r['values']}", f"{r['bisection ms']:.2f}",
                             f"{r['sort ms']:.2f}", f"{r['max_difference']:.2g}"] for r in out]))
    return out


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--rows", type=int, default=64, help="points projected at once (FAB: the batch)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 224], help="image sizes (D = size^2 * 3)")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    rows = run(args.rows, args.sizes, args.repeats)
    return harness.write_result("fab_projection", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
