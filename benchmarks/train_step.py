"""One model's inference and train-step speed in this process alone (no PyTorch), for before/after checks.

    python benchmarks/train_step.py --model resnet50 --batch 16 --dtype float32 [--mode reference]
    JAXCNN_ONEDNN=0 python benchmarks/train_step.py ...     # XLA's convolutions instead of oneDNN
    python benchmarks/train_step.py ... --no-keep-heap      # without jaxcnn.cpu.host_memory
    python benchmarks/train_step.py ... --compile-cache DIR # JAX's persistent cache there (run twice:
                                                            # the second run's compile is a cache read)

Prints images/s (best of the timed steps after one warm step), compile time of the train step
(lowering + XLA) and minor page faults per step.
"""

from __future__ import annotations

import argparse
import resource
import time

from jaxcnn import cpu
from jaxcnn.cpu import host_memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--mode", default="auto", choices=["auto", "reference", "fast"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-keep-heap", action="store_true")
    ap.add_argument("--compile-cache", metavar="DIR", help="JAX's persistent compilation cache in DIR")
    args = ap.parse_args()
    if args.compile_cache:
        import os

        from jaxcnn.cli import compile_cache
        os.environ["JAXCNN_COMPILE_CACHE"] = args.compile_cache
        compile_cache.enable()
    if not args.no_keep_heap:
        host_memory.keep_freed_memory()      # before JAX's first computation
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxcnn
    from jaxcnn import cpu
    from jaxcnn.training.state import create_train_state
    from jaxcnn.training.steps import make_train_step

    cpu.set_mode(args.mode)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (args.batch, args.size, args.size, 3)), jnp.uint8),
             "label": jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)}
    extra = {"aux_logits": False} if args.model in ("googlenet", "inception_v3") else {}
    model = jaxcnn.create_model(args.model, dtype=args.dtype, **extra)
    tx = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(model, tx, (args.size, args.size, 3), seed=0)
    infer = jax.jit(lambda v, x: model.apply(v, x.astype(jnp.float32) / 255.0, train=False)[0]).lower(
        state.variables, batch["image"]).compile()
    t = time.perf_counter()
    step = jax.jit(make_train_step(model, tx), donate_argnums=0).lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    state, m = step(state, batch)
    jax.block_until_ready((m, infer(state.variables, batch["image"])))
    ti, tt, faults = [], [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        jax.block_until_ready(infer(state.variables, batch["image"]))
        ti.append(time.perf_counter() - t)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        tt.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(f"{args.model} {args.dtype} mode={args.mode} batch {args.batch}: inference {args.batch / min(ti):.1f} "
          f"img/s, train {args.batch / min(tt):.2f} img/s, train compile {compile_s:.1f} s, "
          f"page faults/step {min(faults)}, heap kept {host_memory.applied}")


if __name__ == "__main__":
    main()
