"""Seconds to compile and run a zoo model's jitted ``model.init``, with JAX's default
(partitionable) threefry against the non-partitionable one ``model_stats.init_variables`` uses.
Each measurement clears JAX's caches first; the two schemes alternate, median of the repeats.

    python benchmarks/init_compile.py --models googlenet inception_v3 resnet50 vgg16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["googlenet", "inception_v3", "resnet50", "vgg16"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp

    from jaxcnn.models import create_model, model_info

    def once(model, x, partitionable: bool) -> tuple[float, float]:
        jax.clear_caches()
        with jax.threefry_partitionable(partitionable):
            key = jax.random.key(0, impl="threefry2x32")
            t0 = time.perf_counter()
            compiled = jax.jit(lambda k: model.init(k, x, train=False)).lower(key).compile()
            t1 = time.perf_counter()
            jax.block_until_ready(compiled(key))
            return t1 - t0, time.perf_counter() - t1

    print("| model | partitionable compile s / run s | non-partitionable compile s / run s |")
    print("|---|---|---|")
    for name in args.models:
        model = create_model(name)
        r = model_info(name).resolution
        x = jnp.zeros((1, r, r, 3), jnp.float32)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for p in (True, False):
                times[p].append(once(model, x, p))
        cells = [" / ".join(f"{statistics.median(t[i] for t in times[p]):.2f}" for i in (0, 1))
                 for p in (True, False)]
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
