"""Max-pool forward + backward time at the pools of AlexNet, VGG-16, GoogLeNet and ResNet-50.

Three lowerings of ``jaxcnn.layers.max_pool``: XLA's ``select_and_scatter`` VJP (``cpu.mode("reference")``),
the strided-slice VJP (the fast path with ``policy.disabled("max_pool")``, what runs where the C++ pool
does not) and the C++ pool of ``csrc/max_pool.cc`` (the fast path), and, when PyTorch is importable,
``torch.nn.functional.max_pool2d`` on a channels-last tensor; each the median of ``--repeats`` calls of
``y = pool(x); dx = vjp(g)``, in milliseconds. The three lowerings' gradients are checked equal first.

    python -m benchmarks.cpu.pool_layers --repeats 20
"""

from __future__ import annotations

import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.pool_layers"
# (name, batch, H, C, kernel, stride, padding, ceil_mode) at the model benchmark's batches
POOLS = [
    ("alexnet pool1", 32, 55, 64, 3, 2, 0, False),
    ("alexnet pool2", 32, 27, 192, 3, 2, 0, False),
    ("vgg16 pool1", 8, 224, 64, 2, 2, 0, False),
    ("vgg16 pool2", 8, 112, 128, 2, 2, 0, False),
    ("googlenet maxpool1", 16, 112, 64, 3, 2, 0, True),
    ("googlenet 3a branch", 16, 28, 192, 3, 1, 1, True),
    ("googlenet 4a branch", 16, 14, 480, 3, 1, 1, True),
    ("resnet50 stem", 16, 112, 64, 3, 2, 1, False),
]
LOWERINGS = ("select_and_scatter", "slices", "c++")


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--only", default="", metavar="TEXT", help="the pools whose name contains TEXT")
    ap.add_argument("--batch", type=int, help="one batch for all pools instead of the models' batches")
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    import contextlib

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu, layers
    from jaxcnn.cpu import build, policy
    try:
        import torch
    except ImportError:
        torch = None

    if not build.available():
        raise SystemExit(f"the C++ pool is unavailable: {build.why_unavailable()}")
    @contextlib.contextmanager
    def slices():
        with cpu.mode("fast"), policy.disabled("max_pool"):
            yield

    contexts = {"select_and_scatter": lambda: cpu.mode("reference"), "slices": slices, "c++": lambda: cpu.mode("fast")}
    rows = []
    rng = np.random.default_rng(0)
    for name, n, h, c, k, s, p, ceil in POOLS:
        if args.only not in name:
            continue
        n = args.batch or n
        x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
        pool = lambda x: layers.max_pool(x, k, s, p, ceil_mode=ceil)  # noqa: E731
        g = jnp.asarray(rng.normal(size=jax.eval_shape(pool, x).shape), jnp.float32)
        calls, grads = {}, {}
        for label in LOWERINGS:
            with contexts[label]():       # a new function per lowering: jax caches traces by function
                f = jax.jit(lambda x, g: jax.vjp(pool, x)[1](g)[0]).lower(x, g).compile()
            calls[label] = lambda f=f: f(x, g)
            grads[label] = np.asarray(f(x, g))
        for label in LOWERINGS[1:]:   # overlapping windows sum in any order
            np.testing.assert_allclose(grads[label], grads[LOWERINGS[0]], rtol=1e-5, atol=1e-5, err_msg=label)
        t = {label: harness.time_call(fn, args.repeats) for label, fn in calls.items()}
        if torch is not None:
            xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).requires_grad_(True)
            gt = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2)

            def run():
                xt.grad = None
                torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil).backward(gt)
            t["torch channels-last"] = harness.time_call(run, args.repeats)
        rows.append({"pool": name, "shape": [n, h, h, c], **{f"{label} ms": v.ms for label, v in t.items()},
                     "timing": t})
    cols = [*(f"{label} ms" for label in LOWERINGS), "torch channels-last ms"]
    print(harness.markdown(["pool", "batch x H x W x C", *cols],
                           [[r["pool"], "x".join(map(str, r["shape"])),
                             *(f"{r[c]:.1f}" if c in r else "-" for c in cols)]
                            for r in rows]))
    return harness.write_result("pool_layers", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
