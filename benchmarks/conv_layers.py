"""Per-convolution GFLOP/s of XLA:CPU's convolutions and of jaxcnn's oneDNN ones: forward, input
gradient and weight gradient for ResNet-50's convolution shapes (no PyTorch needed). ``--stems``:
the input gradient of the models' strided stems into 3 channels (what input optimisation
differentiates), oneDNN's backward-data primitive against ``onednn.input_gradient_by_taps``, timed
alternating, median of ``--repeats``.

    python benchmarks/conv_layers.py [--batch 16] [--dtype float32]
    python benchmarks/conv_layers.py --stems [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from jaxcnn.cpu import host_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [  # (H, C in, C out, kernel, stride)
    (224, 3, 64, 7, 2), (56, 64, 64, 1, 1), (56, 64, 64, 3, 1), (56, 64, 256, 1, 1), (56, 256, 64, 1, 1),
    (56, 128, 128, 3, 2), (56, 256, 512, 1, 2), (28, 128, 128, 3, 1), (14, 256, 256, 3, 1),
    (14, 1024, 256, 1, 1), (7, 512, 512, 3, 1), (7, 2048, 512, 1, 1)]


STEMS = [  # (name, batch, H = W, C out, kernel, stride, padding), all from 3 channels
    ("ResNet / GoogLeNet 7x7/2", 8, 128, 64, 7, 2, 3), ("ResNet / GoogLeNet 7x7/2", 8, 224, 64, 7, 2, 3),
    ("ResNet / GoogLeNet 7x7/2", 1, 224, 64, 7, 2, 3), ("ResNet / GoogLeNet 7x7/2", 1, 128, 64, 7, 2, 3),
    ("AlexNet 11x11/4", 8, 224, 64, 11, 4, 2), ("AlexNet two-tower 11x11/4", 1, 224, 96, 11, 4, 2),
    ("Inception-v3 3x3/2", 8, 299, 32, 3, 2, 0)]


def stems(repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from interleaved import interleaved_ms

    from jaxcnn.cpu import onednn

    print("| stem (batch, size) | input gradient ms: oneDNN backward data / by taps |")
    print("|---|---|")
    rng = np.random.default_rng(0)
    bound = onednn.MAX_TAPS_CHANNELS
    for name, n, h, o, k, s, p in STEMS:
        x = jnp.asarray(rng.standard_normal((n, h, h, 3)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, 3, o)) / k, jnp.float32)
        y = onednn.conv(x, w, (s, s), ((p, p), (p, p)))
        g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
        runs = {}
        for label, taps in (("onednn", False), ("taps", True)):
            onednn.MAX_TAPS_CHANNELS = 3 if taps else 0     # read when the gradient is traced
            f = jax.jit(lambda x, w: jax.vjp(lambda x: onednn.conv(x, w, (s, s), ((p, p), (p, p))), x)[1](g)[0])
            f = f.lower(x, w).compile()
            runs[label] = lambda f=f: f(x, w)
        onednn.MAX_TAPS_CHANNELS = bound
        ms = interleaved_ms(runs, repeats)
        print(f"| {name} ({n}, {h}) | {ms['onednn']:.2f} / {ms['taps']:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--stems", action="store_true")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    if args.stems:
        return stems(args.repeats)
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxcnn.cpu import onednn

    dn = ("NHWC", "HWIO", "NHWC")

    def best(f, *a):
        jax.block_until_ready(f(*a))
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            jax.block_until_ready(f(*a))
            ts.append(time.perf_counter() - t)
        return min(ts)

    impls = {"xla": lambda x, w, s, p: lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=dn),
             "onednn": lambda x, w, s, p: onednn.conv(x, w, (s, s), ((p, p), (p, p)))}
    print(f"batch {args.batch}, {args.dtype}; GFLOP/s forward / input gradient / weight gradient\n")
    print("| layer | XLA | oneDNN |")
    print("|---|---|---|")
    dtype = jnp.dtype(args.dtype)
    for h, c, o, k, s in SHAPES:
        x, w = jnp.ones((args.batch, h, h, c), dtype), jnp.full((k, k, c, o), 0.01, dtype)
        cells = []
        for conv in impls.values():
            f = lambda x, w, conv=conv: conv(x, w, s, k // 2)
            y, vjp = jax.vjp(f, x, w)
            g = jnp.ones_like(y)
            flop = 2 * y.size * c * k * k / 1e9
            times = (best(jax.jit(f), x, w), best(jax.jit(lambda g: vjp(g)[0]), g),
                     best(jax.jit(lambda g: vjp(g)[1]), g))
            cells.append(" / ".join(f"{flop / t:.0f}" for t in times))
        print(f"| {h}x{h} {k}x{k}/{s} {c}->{o} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
