"""The bias gradient of a bfloat16 convolution: the plain sum XLA:CPU gets from differentiating ``y + b``
(a bfloat16 reduction) against ``ops.bias_add``'s float32 sum.

Per layer: milliseconds of the bias gradient alone, median of ``--repeats``, the two alternating (the
fast path, and ``policy.disabled("bias_add")``), and its largest error relative to a float64 sum.
``--step MODEL`` also compiles MODEL's bfloat16 train step (SGD-momentum, 224 px) with each in one
process and times the two alternating (median images/s).

    python -m benchmarks.cpu.bias_grad --repeats 9 [--step vgg16 --batch 8]
"""

from __future__ import annotations

import contextlib
import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.bias_grad"
SHAPES = ["8x224x224x64", "8x56x56x256", "8x14x14x512", "32x55x55x64"]   # VGG-16's, AlexNet's conv1


def _variants():
    from jaxcnn.cpu import policy

    return {"plain": lambda: policy.disabled("bias_add"), "f32": contextlib.nullcontext}


def _layers(shapes: list[str], repeats: int) -> list[dict]:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu
    from jaxcnn.cpu import ops

    rows = []
    for spec in shapes:
        shape = tuple(int(v) for v in spec.split("x"))
        g = jnp.asarray(np.random.default_rng(0).normal(0.5, 1.0, size=shape), jnp.bfloat16)
        y, b = jnp.zeros(shape, jnp.bfloat16), jnp.zeros(shape[-1:], jnp.float32)
        want = np.asarray(g, np.float64).reshape(-1, shape[-1]).sum(0)
        calls, err = {}, {}
        for name, context in _variants().items():
            with cpu.mode("fast"), context():     # a new function per variant: jax caches traces by function
                f = jax.jit(jax.grad(lambda b, y, g: jnp.vdot(ops.bias_add(y, b).astype(jnp.float32),
                                                               g.astype(jnp.float32)))).lower(b, y, g).compile()
            err[name] = float(np.abs(np.asarray(f(b, y, g), np.float64) - want).max() / np.abs(want).max())
            calls[name] = functools.partial(f, b, y, g)   # arguments, not constants XLA would fold
        t = harness.interleaved(calls, repeats)
        rows.append({"shape": spec, **{f"{k} ms": t[k].ms for k in calls}, **{f"{k} rel_error": err[k] for k in calls},
                     "timing": t})
    print(harness.markdown(["gradient shape", "plain bf16 sum ms", "float32 sum ms", "plain rel. error",
                            "float32 rel. error"],
                           [[r["shape"], f"{r['plain ms']:.1f}", f"{r['f32 ms']:.1f}", f"{r['plain rel_error']:.1e}",
                             f"{r['f32 rel_error']:.1e}"] for r in rows]))
    return rows


def _step(name: str, batch: int, repeats: int) -> list[dict]:
    rows = []
    for k, r in harness.train_steps(name, batch, "bfloat16", _variants(), repeats).items():
        print(f"{name} bfloat16 batch {batch} train step, {k} bias gradient: compile {r['compile_s']:.1f} s, "
              f"{r['images_per_s']:.2f} img/s (median of {repeats})", flush=True)
        rows.append({"step": name, "batch": batch, "bias_gradient": k, **r})
    return rows


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shapes", nargs="+", default=SHAPES, metavar="NxHxWxC")
    ap.add_argument("--step", metavar="MODEL", help="also time MODEL's bf16 train step with each bias gradient")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    rows = _layers(args.shapes, args.repeats)
    if args.step:
        rows += _step(args.step, args.batch, args.repeats)
    return harness.write_result("bias_grad", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
