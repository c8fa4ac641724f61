"""Training-mode batch norm + ReLU, forward + backward, at ResNet-50's batch-norm shapes: flax's formula
compiled by XLA against the C++ kernel of ``csrc/batch_norm.cc`` (``jaxcnn.lowering.batch_norm``).

Each figure is the median of ``--repeats`` calls of the gradient of ``sum(relu(bn(x)) * g)`` with
respect to x, scale and bias, in milliseconds, the two lowerings alternating; the forward alone
(``relu(bn(x))``) is timed the same way. No PyTorch needed.

    python benchmarks/batch_norm_layers.py --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

from jaxcnn import host_memory

SHAPES = [(16, 112, 112, 64), (16, 56, 56, 256), (16, 28, 28, 512), (16, 7, 7, 2048)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import lowering, onednn

    if not onednn.available():
        raise SystemExit(f"the C++ batch norm is unavailable: {onednn.why_unavailable()}")
    kernels = {"xla": lowering._batch_norm_reference, "c++": lowering._batch_norm_native}
    print("| shape | dtype | XLA fwd ms | C++ fwd ms | XLA fwd+bwd ms | C++ fwd+bwd ms |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        for dtype in (jnp.float32, jnp.bfloat16):
            rng = np.random.default_rng(0)
            x = jnp.asarray(rng.normal(size=shape), dtype)
            c = shape[-1]
            scale, bias = jnp.ones(c), jnp.zeros(c)
            g = jnp.asarray(rng.normal(size=shape), jnp.float32)
            calls = {}
            for name, bn in kernels.items():
                loss = lambda x, s, b, bn=bn: jnp.sum(jnp.maximum(bn(x, s, b, 1e-5)[0], 0) * g)
                calls[name, "fwd"] = jax.jit(lambda x, s, b, bn=bn: jnp.maximum(bn(x, s, b, 1e-5)[0], 0))
                calls[name, "grad"] = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            for f in calls.values():
                jax.block_until_ready(f(x, scale, bias))
            times = {k: [] for k in calls}
            for _ in range(args.repeats):
                for k, f in calls.items():
                    t = time.perf_counter()
                    jax.block_until_ready(f(x, scale, bias))
                    times[k].append((time.perf_counter() - t) * 1e3)
            ms = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {'x'.join(map(str, shape))} | {jnp.dtype(dtype).name} | {ms['xla', 'fwd']:.1f} | "
                  f"{ms['c++', 'fwd']:.1f} | {ms['xla', 'grad']:.1f} | {ms['c++', 'grad']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
