"""Per-convolution GFLOP/s of XLA:CPU's convolutions and of jaxcnn's oneDNN ones (``jaxcnn.cpu.onednn``).

The forward, input gradient and weight gradient of ResNet-50's convolution shapes, the median of
``--repeats`` calls each: why the CPU fast path hands convolutions to oneDNN. ``--stems``: the input
gradient of the models' strided stems into 3 channels (what input optimisation differentiates), oneDNN's
backward-data primitive against ``onednn.input_gradient_by_taps`` (the product into the taps and their
overlapping sum), timed alternating: why ``onednn.MAX_TAPS_CHANNELS`` routes such gradients by taps.

    python -m benchmarks.cpu.conv_layers [--batch 16] [--dtype float32]
    python -m benchmarks.cpu.conv_layers --stems [--repeats 9]
"""

from __future__ import annotations

import sys

from benchmarks import harness

MODULE = "benchmarks.cpu.conv_layers"
SHAPES = [  # H:C in:C out:kernel:stride
    "224:3:64:7:2", "56:64:64:1:1", "56:64:64:3:1", "56:64:256:1:1", "56:256:64:1:1", "56:128:128:3:2",
    "56:256:512:1:2", "28:128:128:3:1", "14:256:256:3:1", "14:1024:256:1:1", "7:512:512:3:1", "7:2048:512:1:1"]
STEMS = [  # (name, batch, H = W, C out, kernel, stride, padding), all from 3 channels
    ("ResNet / GoogLeNet 7x7/2", 8, 128, 64, 7, 2, 3), ("ResNet / GoogLeNet 7x7/2", 8, 224, 64, 7, 2, 3),
    ("ResNet / GoogLeNet 7x7/2", 1, 224, 64, 7, 2, 3), ("ResNet / GoogLeNet 7x7/2", 1, 128, 64, 7, 2, 3),
    ("AlexNet 11x11/4", 8, 224, 64, 11, 4, 2), ("AlexNet two-tower 11x11/4", 1, 224, 96, 11, 4, 2),
    ("Inception-v3 3x3/2", 8, 299, 32, 3, 2, 0)]


def stems(repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.cpu import onednn

    rows, bound = [], onednn.MAX_TAPS_CHANNELS
    rng = np.random.default_rng(0)
    for name, n, h, o, k, s, p in STEMS:
        x = jnp.asarray(rng.standard_normal((n, h, h, 3)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, 3, o)) / k, jnp.float32)
        conv = lambda x, w: onednn.conv(x, w, (s, s), ((p, p), (p, p)))  # noqa: E731
        g = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape), jnp.float32)
        runs = {}
        try:
            for label, channels in (("onednn", 0), ("taps", 3)):
                onednn.MAX_TAPS_CHANNELS = channels     # read when the gradient is traced
                f = jax.jit(lambda x, w: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]).lower(x, w).compile()
                runs[label] = lambda f=f: f(x, w)
        finally:
            onednn.MAX_TAPS_CHANNELS = bound
        t = harness.interleaved(runs, repeats)
        rows.append({"stem": name, "batch": n, "size": h, "onednn_ms": t["onednn"].ms, "taps_ms": t["taps"].ms,
                     "timing": t})
    print(harness.markdown(["stem (batch, size)", "input gradient ms: oneDNN backward data / by taps"],
                           [[f"{r['stem']} ({r['batch']}, {r['size']})", f"{r['onednn_ms']:.2f} / {r['taps_ms']:.2f}"]
                            for r in rows]))
    return rows


def layers(shapes: list[str], batch: int, dtype: str, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxcnn.cpu import onednn

    dn = ("NHWC", "HWIO", "NHWC")
    impls = {"xla": lambda x, w, s, p: lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=dn),
             "onednn": lambda x, w, s, p: onednn.conv(x, w, (s, s), ((p, p), (p, p)))}
    rows = []
    for spec in shapes:
        h, c, o, k, s = (int(v) for v in spec.split(":"))
        x, w = jnp.ones((batch, h, h, c), dtype), jnp.full((k, k, c, o), 0.01, dtype)
        for impl, conv in impls.items():
            f = lambda x, w, conv=conv: conv(x, w, s, k // 2)
            y, vjp = jax.vjp(f, x, w)
            g = jnp.ones_like(y)
            gflop = 2 * y.size * c * k * k / 1e9
            calls = {"forward": lambda f=jax.jit(f): f(x, w),
                     "input_gradient": lambda d=jax.jit(lambda g: vjp(g)[0]): d(g),
                     "weight_gradient": lambda d=jax.jit(lambda g: vjp(g)[1]): d(g)}
            t = {part: harness.time_call(fn, repeats) for part, fn in calls.items()}
            rows.append({"layer": f"{h}x{h} {k}x{k}/{s} {c}->{o}", "impl": impl, "batch": batch, "dtype": dtype,
                         "gflop": gflop, **{f"{part}_gflop_s": gflop / t[part].median for part in calls},
                         "timing": t})
    by = {(r["layer"], r["impl"]): r for r in rows}
    cell = lambda r: " / ".join(f"{r[f'{p}_gflop_s']:.0f}" for p in ("forward", "input_gradient", "weight_gradient"))  # noqa: E731
    print(f"batch {batch}, {dtype}; GFLOP/s forward / input gradient / weight gradient\n")
    print(harness.markdown(["layer", "XLA", "oneDNN"], [[layer, cell(by[layer, "xla"]), cell(by[layer, "onednn"])]
                                                        for layer in dict.fromkeys(r["layer"] for r in rows)]))
    return rows


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--shapes", nargs="+", default=SHAPES, metavar="H:CIN:COUT:K:S", help="the layers' shapes")
    ap.add_argument("--stems", action="store_true", help="the stems' input gradients instead")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
    from jaxcnn.cpu import build

    if not build.available():
        raise SystemExit(f"oneDNN is unavailable: {build.why_unavailable()}")
    if args.stems:
        rows = stems(args.repeats)
    else:
        rows = layers(args.shapes, args.batch, args.dtype, args.repeats)
    return harness.write_result("conv_stems" if args.stems else "conv_layers", MODULE, argv, rows, out=args.out,
                                settings=harness.settings(args))


if __name__ == "__main__":
    main()
