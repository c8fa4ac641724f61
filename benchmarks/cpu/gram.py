"""Gram matrices F^T F of style losses: XLA's dot against oneDNN's matmul (``ops.gram``).

At VGG-19's style layers (conv1_1 .. conv5_1, batch 1) for 128 and 224 px, the product alone and with
its gradient; ``--loop``: the float32 style-transfer loop of ``benchmarks.inputopt_loops`` with each
(oneDNN's on the fast path, XLA's with ``policy.disabled("gram")``). All in one process, alternating,
medians of ``--repeats``.

    python -m benchmarks.cpu.gram [--repeats 15]
    python -m benchmarks.cpu.gram --loop [--size 224] [--repeats 5]
"""

from __future__ import annotations

import contextlib
import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.gram"
LAYERS = [("conv1_1", 64, 1), ("conv2_1", 128, 2), ("conv3_1", 256, 4), ("conv4_1", 512, 8), ("conv5_1", 512, 16)]


def _variants():
    from jaxcnn.cpu import policy

    return {"xla": lambda: policy.disabled("gram"), "onednn": contextlib.nullcontext}


def layers(sizes: list[int], repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu
    from jaxcnn.cpu import ops

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        for name, c, down in LAYERS:
            p = max(size // down, 1) ** 2
            f = jnp.asarray(rng.standard_normal((1, p, c)), jnp.float32)
            t = jnp.asarray(rng.standard_normal((1, c, c)), jnp.float32)
            calls = {}
            for label, context in _variants().items():
                with cpu.mode("fast"), context():      # new functions per variant: jax caches traces by function
                    fwd = jax.jit(lambda f: ops.gram(f)).lower(f).compile()
                    step = jax.jit(jax.value_and_grad(lambda f: jnp.sum((ops.gram(f) / p - t) ** 2))).lower(f).compile()
                calls[label] = lambda fwd=fwd: fwd(f)
                calls[label + " grad"] = lambda step=step: step(f)
            timing = harness.interleaved(calls, repeats)
            rows.append({"layer": name, "size": size, "pixels": p, "channels": c,
                         **{f"{k} ms": v.ms for k, v in timing.items()}, "timing": timing})
    print(harness.markdown(["layer, size", "pixels x channels", "product ms XLA / oneDNN",
                            "with gradient ms XLA / oneDNN"],
                           [[f"{r['layer']}, {r['size']} px", f"{r['pixels']} x {r['channels']}",
                             f"{r['xla ms']:.2f} / {r['onednn ms']:.2f}",
                             f"{r['xla grad ms']:.2f} / {r['onednn grad ms']:.2f}"]
                            for r in rows]))
    return rows


def loop(size: int, steps: int, repeats: int) -> list[dict]:
    from benchmarks.inputopt_loops import style_run

    runs = {}
    for label, context in _variants().items():
        runs[label] = harness.within(context, style_run(size=size, steps=steps))
    timing = harness.interleaved(runs, repeats)
    print(f"float32 style transfer, {size} px, ms/step: "
          + ", ".join(f"Gram by {k} {v.ms / steps:.1f}" for k, v in timing.items()))
    return [{"loop": "style", "size": size, "steps": steps, "gram": k, "ms_per_step": v.ms / steps, "timing": v}
            for k, v in timing.items()]


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--loop", action="store_true", help="the style-transfer loop instead of the layers")
    ap.add_argument("--size", type=int, nargs="+", default=[128, 224], help="image sizes (--loop: the first)")
    ap.add_argument("--steps", type=int, default=10, help="--loop: steps per run")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    rows = loop(args.size[0], args.steps, args.repeats) if args.loop else layers(args.size, args.repeats)
    return harness.write_result("gram_loop" if args.loop else "gram", MODULE, argv, rows, out=args.out,
                                settings=harness.settings(args))


if __name__ == "__main__":
    main()
