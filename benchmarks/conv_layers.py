"""Per-convolution GFLOP/s of XLA:CPU's convolutions and of jaxcnn's oneDNN ones: forward, input
gradient and weight gradient for ResNet-50's convolution shapes (no PyTorch needed).

    python benchmarks/conv_layers.py [--batch 16] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time

from jaxcnn import host_memory

SHAPES = [  # (H, C in, C out, kernel, stride)
    (224, 3, 64, 7, 2), (56, 64, 64, 1, 1), (56, 64, 64, 3, 1), (56, 64, 256, 1, 1), (56, 256, 64, 1, 1),
    (56, 128, 128, 3, 2), (56, 256, 512, 1, 2), (28, 128, 128, 3, 1), (14, 256, 256, 3, 1),
    (14, 1024, 256, 1, 1), (7, 512, 512, 3, 1), (7, 2048, 512, 1, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxcnn import onednn

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
