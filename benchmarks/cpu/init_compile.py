"""Seconds to compile and run a zoo model's jitted ``model.init``, with JAX's default (partitionable)
threefry against the non-partitionable one ``model_stats.init_variables`` uses.

Each measurement clears JAX's caches first; the two schemes alternate, median of ``--repeats``.

    python -m benchmarks.cpu.init_compile --models googlenet inception_v3 resnet50 vgg16 --repeats 3
"""

from __future__ import annotations

import statistics
import sys
import time

from benchmarks import harness

MODULE = "benchmarks.cpu.init_compile"


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__)
    ap.add_argument("--models", nargs="+", default=["googlenet", "inception_v3", "resnet50", "vgg16"])
    ap.add_argument("--size", type=int, help="the input size (default: each model's resolution)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    harness.keep_heap(args)
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

    rows = []
    for name in args.models:
        model = create_model(name)
        r = args.size or model_info(name).resolution
        x = jnp.zeros((1, r, r, 3), jnp.float32)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for p in (True, False):
                times[p].append(once(model, x, p))
        for p in (True, False):
            rows.append({"model": name, "size": r, "threefry": "partitionable" if p else "non-partitionable",
                         "compile_s": statistics.median(t[0] for t in times[p]),
                         "run_s": statistics.median(t[1] for t in times[p]), "runs_s": times[p]})
    print(harness.markdown(["model", "partitionable compile s / run s", "non-partitionable compile s / run s"],
                           [[name, *(f"{r['compile_s']:.2f} / {r['run_s']:.2f}" for r in rows if r["model"] == name)]
                            for name in args.models]))
    return harness.write_result("init_compile", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
