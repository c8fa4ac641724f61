"""Gram matrices F^T F of style losses: XLA's dot against oneDNN's matmul (``ops.gram``), at
VGG-19's style layers (conv1_1 .. conv5_1, batch 1) for 128 and 224 px, the product alone and with
its gradient; ``--loop``: the float32 style-transfer loop traced with each, timed alternating.
All in one process, alternating, medians of ``--repeats``.

    python benchmarks/gram.py [--repeats 15]
    python benchmarks/gram.py --loop [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcnn.cpu import host_memory, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LAYERS = [("conv1_1", 64, 1), ("conv2_1", 128, 2), ("conv3_1", 256, 4), ("conv4_1", 512, 8), ("conv5_1", 512, 16)]


def _xla(flat):
    import jax.numpy as jnp
    return jnp.einsum("bpc,bpd->bcd", flat, flat)


def layers(repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from interleaved import interleaved_ms

    from jaxcnn.cpu import ops

    rng = np.random.default_rng(0)
    print("| layer, size | pixels x channels | product ms XLA / oneDNN | with gradient ms XLA / oneDNN |")
    print("|---|---|---|---|")
    for size in (128, 224):
        for name, c, down in LAYERS:
            p = (size // down) ** 2
            f = jnp.asarray(rng.standard_normal((1, p, c)), jnp.float32)
            t = jnp.asarray(rng.standard_normal((1, c, c)), jnp.float32)
            calls = {}
            for label, g in (("xla", _xla), ("onednn", ops.gram)):
                fwd = jax.jit(g)
                step = jax.jit(jax.value_and_grad(lambda f, g=g: jnp.sum((g(f) / p - t) ** 2)))
                calls[label] = lambda fwd=fwd: fwd(f)
                calls[label + " grad"] = lambda step=step: step(f)
            ms = interleaved_ms(calls, repeats)
            print(f"| {name}, {size} px | {p} x {c} | {ms['xla']:.2f} / {ms['onednn']:.2f} | "
                  f"{ms['xla grad']:.2f} / {ms['onednn grad']:.2f} |", flush=True)


def loop(size: int, repeats: int) -> None:
    from interleaved import interleaved_ms
    from inputopt_loops import style_run

    from jaxcnn.cpu import ops

    fast, runs = ops.gram, {}
    for label, g in (("XLA's dot", _xla), ("oneDNN", fast)):
        ops.gram = g          # read when the step is traced: on the run's first call
        runs[label] = style_run(size=size, steps=10)
        runs[label]()
    ops.gram = fast
    ms = interleaved_ms(runs, repeats)
    print(f"float32 style transfer, {size} px, ms/step: "
          + ", ".join(f"Gram by {k} {v / 10:.1f}" for k, v in ms.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    host_memory.keep_freed_memory()
    if args.loop:
        loop(args.size, args.repeats)
    else:
        layers(args.repeats)


if __name__ == "__main__":
    main()
