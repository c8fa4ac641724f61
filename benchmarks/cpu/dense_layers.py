"""Dense-layer forward and forward + backward time at the FC layers of AlexNet, VGG-16 and ResNet-50.

``jaxcnn.layers.dense`` with XLA's dot (``cpu.mode("reference")``) and through oneDNN's matmul
(``cpu.mode("fast")``), float32 and bfloat16 compute, median of ``--repeats`` calls, in milliseconds:
why dense layers go through oneDNN on the CPU fast path.

    python -m benchmarks.cpu.dense_layers --repeats 21
"""

from __future__ import annotations

import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.dense_layers"
LAYERS = ["alexnet fc6:32:9216:4096", "alexnet fc7:32:4096:4096", "vgg16 fc6:8:25088:4096", "resnet50 fc:16:2048:1000"]


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--layers", nargs="+", default=LAYERS, metavar="NAME:BATCH:IN:OUT")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    import jax
    import jax.numpy as jnp

    from jaxcnn import cpu, layers

    rows = []
    for spec in args.layers:
        name, b, k, n = spec.rsplit(":", 3)
        b, k, n = int(b), int(k), int(n)
        for dtype in args.dtypes:
            dense = layers.dense(n, dtype=dtype)
            x = jnp.ones((b, k))
            v = dense.init(jax.random.key(0), x)
            row = {"layer": name, "shape": f"{b}x{k} -> {n}", "dtype": dtype, "timing": {}}
            for impl, mode in (("xla", "reference"), ("onednn", "fast")):
                with cpu.mode(mode):      # new functions per mode: jax caches traces by function
                    fwd = jax.jit(lambda v, x: dense.apply(v, x)).lower(v, x).compile()
                    loss = lambda v, x: jnp.sum(jnp.tanh(dense.apply(v, x).astype(jnp.float32)))  # noqa: E731
                    both = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(v, x).compile()
                for part, f in (("forward", fwd), ("fwd+bwd", both)):
                    t = harness.time_call(lambda f=f: f(v, x), args.repeats)
                    row[f"{impl} {part} ms"], row["timing"][f"{impl} {part}"] = t.ms, t
            rows.append(row)
    cols = ["xla forward ms", "xla fwd+bwd ms", "onednn forward ms", "onednn fwd+bwd ms"]
    print(harness.markdown(["layer", "batch x in -> out", "dtype", "XLA forward ms", "XLA fwd+bwd ms",
                            "oneDNN forward ms", "oneDNN fwd+bwd ms"],
                           [[r["layer"], r["shape"], r["dtype"], *(f"{r[c]:.1f}" for c in cols)] for r in rows]))
    return harness.write_result("dense_layers", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
