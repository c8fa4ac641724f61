"""Max-pool forward + backward time at the pools of AlexNet, VGG-16, GoogLeNet and ResNet-50.

Three lowerings of ``jaxcnn.ops.max_pool`` (XLA's ``select_and_scatter`` VJP, the
strided-slice VJP, the C++ pool of ``csrc/max_pool.cc``) and, when PyTorch is importable,
``torch.nn.functional.max_pool2d`` on a channels-last tensor, each the median of ``--repeats``
calls of ``y = pool(x); dx = vjp(g)``, in milliseconds.

    python benchmarks/pool_layers.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

from jaxcnn import cpu
from jaxcnn.cpu import host_memory, ops

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


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu, layers
    from jaxcnn.cpu import ops
    try:
        import torch
    except ImportError:
        torch = None

    print("| pool | batch x H x W x C | XLA select_and_scatter ms | strided slices ms | C++ pool ms | torch channels-last ms |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, n, h, c, k, s, p, ceil in POOLS:
        x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
        pool = lambda x: layers.max_pool(x, k, s, p, ceil_mode=ceil)
        g = jnp.ones(jax.eval_shape(pool, x).shape, jnp.float32)
        ms = []
        for m in ("reference", "slices", "native"):
            if m == "slices":   # the fast path without the C++ pool
                ctx, native = cpu.mode("fast"), ops._native_pool
                ops._native_pool = lambda *a: False
            else:
                ctx, native = cpu.mode("fast" if m == "native" else m), ops._native_pool
            with ctx:
                f = jax.jit(lambda x, g: jax.vjp(pool, x)[1](g)[0]).lower(x, g).compile()
            ops._native_pool = native
            ms.append(_median_ms(lambda: jax.block_until_ready(f(x, g)), args.repeats))
        if torch is not None:
            xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).requires_grad_(True)
            gt = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2)

            def run():
                xt.grad = None
                torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil).backward(gt)
            ms.append(_median_ms(run, args.repeats))
        cells = " | ".join(f"{v:.1f}" for v in ms) + (" | -" if torch is None else "")
        print(f"| {name} | {n}x{h}x{h}x{c} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
