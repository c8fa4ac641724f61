"""Training-mode batch norm + ReLU, forward + backward, at ResNet-50's batch-norm shapes: flax's formula
compiled by XLA against the C++ kernel of ``csrc/batch_norm.cc`` (``jaxcnn.cpu.ops.batch_norm``).

Each figure is the median of ``--repeats`` calls of the gradient of ``sum(relu(bn(x)) * g)`` with
respect to x, scale and bias, in milliseconds, the two lowerings alternating (the C++ kernel on the
fast path, XLA's formula with ``policy.disabled("batch_norm")``); the forward alone (``relu(bn(x))``)
is timed the same way. ``--step MODEL`` also compiles MODEL's train step (SGD-momentum, 224 px) with
each batch norm in one process and times the two alternating (compile seconds, median images/s).

    python -m benchmarks.cpu.batch_norm_layers --repeats 9 [--step resnet50 --batch 16 --dtype float32]
"""

from __future__ import annotations

import contextlib
import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.batch_norm_layers"
SHAPES = ["16x112x112x64", "16x56x56x256", "16x28x28x512", "16x7x7x2048"]


def _layers(shapes: list[str], repeats: int) -> list[dict]:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu
    from jaxcnn.cpu import ops, policy

    kernels = {"xla": lambda: policy.disabled("batch_norm"), "c++": contextlib.nullcontext}
    rows = []
    for spec in shapes:
        shape = tuple(int(v) for v in spec.split("x"))
        for dtype in ("float32", "bfloat16"):
            rng = np.random.default_rng(0)
            x = jnp.asarray(rng.normal(size=shape), dtype)
            c = shape[-1]
            scale, bias = jnp.ones(c), jnp.zeros(c)
            g = jnp.asarray(rng.normal(size=shape), jnp.float32)
            calls, outs = {}, {}
            for name, context in kernels.items():
                with cpu.mode("fast"), context():     # new functions per kernel: jax caches traces by function
                    fwd = jax.jit(lambda x, s, b: jnp.maximum(ops.batch_norm(x, s, b, 1e-5)[0], 0)).lower(
                        x, scale, bias).compile()
                    loss = lambda x, s, b: jnp.sum(jnp.maximum(ops.batch_norm(x, s, b, 1e-5)[0], 0) * g)  # noqa: E731
                    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, scale, bias).compile()
                calls[name, "fwd"] = functools.partial(fwd, x, scale, bias)
                calls[name, "grad"] = functools.partial(grad, x, scale, bias)
                outs[name] = np.asarray(calls[name, "fwd"](), np.float32)
            np.testing.assert_allclose(outs["c++"], outs["xla"], rtol=1e-3, atol=1e-3)
            t = harness.interleaved(calls, repeats)
            ms = {f"{k} {p} ms": t[k, p].ms for k in kernels for p in ("fwd", "grad")}
            rows.append({"shape": spec, "dtype": dtype, **ms,
                         "timing": {f"{k} {p}": v for (k, p), v in t.items()}})
    cols = ["xla fwd ms", "c++ fwd ms", "xla grad ms", "c++ grad ms"]
    print(harness.markdown(["shape", "dtype", "XLA fwd ms", "C++ fwd ms", "XLA fwd+bwd ms", "C++ fwd+bwd ms"],
                           [[r["shape"], r["dtype"], *(f"{r[c]:.1f}" for c in cols)] for r in rows]))
    return rows


def _step(name: str, batch: int, dtype: str, repeats: int) -> list[dict]:
    from jaxcnn.cpu import policy

    result = harness.train_steps(name, batch, dtype, {"xla": lambda: policy.disabled("batch_norm"),
                                                      "c++": contextlib.nullcontext}, repeats)
    rows = []
    for k, r in result.items():
        print(f"{name} {dtype} batch {batch} train step, {k} batch norm: compile {r['compile_s']:.1f} s, "
              f"{r['images_per_s']:.2f} img/s (median of {repeats})", flush=True)
        rows.append({"step": name, "batch": batch, "dtype": dtype, "batch_norm": k, **r})
    return rows


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shapes", nargs="+", default=SHAPES, metavar="NxHxWxC")
    ap.add_argument("--step", metavar="MODEL", help="also time MODEL's train step with each batch norm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    from jaxcnn.cpu import build

    if not build.available():
        raise SystemExit(f"the C++ batch norm is unavailable: {build.why_unavailable()}")
    rows = [] if args.no_layers else _layers(args.shapes, args.repeats)
    if args.step:
        rows += _step(args.step, args.batch, args.dtype, args.repeats)
    return harness.write_result("batch_norm_layers", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
