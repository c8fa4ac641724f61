"""Training-mode batch norm + ReLU, forward + backward, at ResNet-50's batch-norm shapes: flax's formula
compiled by XLA against the C++ kernel of ``csrc/batch_norm.cc`` (``jaxcnn.ops.batch_norm``).

Each figure is the median of ``--repeats`` calls of the gradient of ``sum(relu(bn(x)) * g)`` with
respect to x, scale and bias, in milliseconds, the two lowerings alternating; the forward alone
(``relu(bn(x))``) is timed the same way. ``--step MODEL`` also compiles MODEL's train step
(SGD-momentum, 224 px) with each batch norm in one process and times the two alternating
(compile seconds, median images/s). No PyTorch needed.

    python benchmarks/batch_norm_layers.py --repeats 9 [--step resnet50 --batch 16 --dtype float32]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from jaxcnn.cpu import build, host_memory, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved import interleaved_ms, train_steps_ab  # noqa: E402

SHAPES = [(16, 112, 112, 64), (16, 56, 56, 256), (16, 28, 28, 512), (16, 7, 7, 2048)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--step", metavar="MODEL", help="also time MODEL's train step with each batch norm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    from jaxcnn.cpu import build, ops

    if not build.available():
        raise SystemExit(f"the C++ batch norm is unavailable: {build.why_unavailable()}")
    if not args.no_layers:
        _layers(args.repeats)
    if args.step:
        _step(args.step, args.batch, args.dtype, args.repeats)


def _layers(repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.cpu import build, ops

    kernels = {"xla": ops._batch_norm_reference, "c++": ops._batch_norm_native}
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
                fwd = jax.jit(lambda x, s, b, bn=bn: jnp.maximum(bn(x, s, b, 1e-5)[0], 0))
                calls[name, "fwd"] = functools.partial(fwd, x, scale, bias)
                calls[name, "grad"] = functools.partial(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), x, scale, bias)
            ms = interleaved_ms(calls, repeats)
            print(f"| {'x'.join(map(str, shape))} | {jnp.dtype(dtype).name} | {ms['xla', 'fwd']:.1f} | "
                  f"{ms['c++', 'fwd']:.1f} | {ms['xla', 'grad']:.1f} | {ms['c++', 'grad']:.1f} |", flush=True)


def _step(name: str, batch: int, dtype: str, repeats: int) -> None:
    from jaxcnn.cpu import build, ops

    result = train_steps_ab(name, batch, dtype, "native_batch_norm",
                            {"c++": ops.native_batch_norm, "xla": lambda x: False}, repeats)
    for k in ("xla", "c++"):
        print(f"{name} {dtype} batch {batch} train step, {k} batch norm: compile {result[k][0]:.1f} s, "
              f"{result[k][1]:.2f} img/s (median of {repeats})", flush=True)


if __name__ == "__main__":
    main()
