"""The bias gradient of a bfloat16 convolution: the plain sum XLA:CPU gets from differentiating ``y + b``
(a bfloat16 reduction) against ``ops.bias_add``'s float32 sum.

Per layer: milliseconds of the bias gradient alone, median of ``--repeats``, the two alternating, and
its largest error relative to a float64 sum. ``--step MODEL`` also compiles MODEL's bfloat16 train
step (SGD-momentum, 224 px) with each in one process and times the two alternating (median
images/s). No PyTorch needed.

    python benchmarks/bias_grad.py --repeats 9 [--step vgg16 --batch 8]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from jaxcnn import cpu
from jaxcnn.cpu import host_memory, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleaved import interleaved_ms, train_steps_ab  # noqa: E402

SHAPES = [(8, 224, 224, 64), (8, 56, 56, 256), (8, 14, 14, 512), (32, 55, 55, 64)]  # VGG-16, AlexNet conv1


def _plain(y, b):
    return y + b.astype(y.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--step", metavar="MODEL", help="also time MODEL's bf16 train step with each bias gradient")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import cpu
    from jaxcnn.cpu import ops

    print("| gradient shape | plain bf16 sum ms | float32 sum ms | plain rel. error | float32 rel. error |")
    print("|---|---|---|---|---|")
    with cpu.mode("fast"):
        for shape in SHAPES:
            g = jnp.asarray(np.random.default_rng(0).normal(0.5, 1.0, size=shape), jnp.bfloat16)
            y, b = jnp.zeros(shape, jnp.bfloat16), jnp.zeros(shape[-1:], jnp.float32)
            want = np.asarray(g, np.float64).reshape(-1, shape[-1]).sum(0)
            calls, err = {}, {}
            for name, add in (("plain", _plain), ("f32", ops.bias_add)):
                f = jax.jit(jax.grad(lambda b, y, g, add=add: jnp.vdot(add(y, b).astype(jnp.float32),
                                                                        g.astype(jnp.float32))))
                err[name] = np.abs(np.asarray(f(b, y, g), np.float64) - want).max() / np.abs(want).max()
                calls[name] = functools.partial(f, b, y, g)   # arguments, not constants XLA would fold
            ms = interleaved_ms(calls, args.repeats)
            print(f"| {'x'.join(map(str, shape))} | {ms['plain']:.1f} | {ms['f32']:.1f} | {err['plain']:.1e} | "
                  f"{err['f32']:.1e} |", flush=True)
    if args.step:
        _step(args.step, args.batch, args.repeats)


def _step(name: str, batch: int, repeats: int) -> None:
    from jaxcnn import cpu
    from jaxcnn.cpu import ops

    result = train_steps_ab(name, batch, "bfloat16", "bias_add", {"f32": ops.bias_add, "plain": _plain},
                            repeats)
    for k in ("plain", "f32"):
        print(f"{name} bfloat16 batch {batch} train step, {k} bias gradient: compile {result[k][0]:.1f} s, "
              f"{result[k][1]:.2f} img/s (median of {repeats})", flush=True)


if __name__ == "__main__":
    main()
