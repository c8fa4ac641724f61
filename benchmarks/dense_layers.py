"""Dense-layer forward and forward + backward time at the FC layers of AlexNet, VGG-16 and ResNet-50.

``jaxcnn.layers.dense`` with XLA's dot (``lowering`` mode "reference") and through oneDNN's matmul
(mode "fast"), float32 and bfloat16 compute, median of ``--repeats`` calls, in milliseconds; the
process keeps its heap (``jaxcnn.cpu.host_memory``) as the ``jaxcnn`` command does.

    python benchmarks/dense_layers.py --repeats 21
"""

from __future__ import annotations

import argparse
import statistics
import time

from jaxcnn import cpu
from jaxcnn.cpu import host_memory

LAYERS = [("alexnet fc6", 32, 9216, 4096), ("alexnet fc7", 32, 4096, 4096), ("vgg16 fc6", 8, 25088, 4096),
          ("resnet50 fc", 16, 2048, 1000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp

    from jaxcnn import cpu, layers

    def median_ms(fn):
        fn()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times)

    print("| layer | batch x in -> out | dtype | XLA forward ms | XLA fwd+bwd ms | oneDNN forward ms | oneDNN fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    for name, b, k, n in LAYERS:
        for dtype in ("float32", "bfloat16"):
            dense = layers.dense(n, dtype=dtype)
            x = jnp.ones((b, k))
            v = dense.init(jax.random.key(0), x)
            loss = lambda v, x: jnp.sum(jnp.tanh(dense.apply(v, x).astype(jnp.float32)))
            ms = []
            for mode in ("reference", "fast"):
                with cpu.mode(mode):
                    fwd = jax.jit(dense.apply).lower(v, x).compile()
                    both = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(v, x).compile()
                ms += [median_ms(lambda: jax.block_until_ready(fwd(v, x))),
                       median_ms(lambda: jax.block_until_ready(both(v, x)))]
            print(f"| {name} | {b}x{k} -> {n} | {dtype} | " + " | ".join(f"{m:.1f}" for m in ms) + " |", flush=True)


if __name__ == "__main__":
    main()
