"""Training-step throughput by strategy (jit-sharded mesh vs pmap) on 1, 2, 4 and 8 (simulated) devices.

Each device count runs in its own process (XLA_FLAGS is read when JAX starts). On a CPU the simulated
devices share the same cores: this shows the cost of the strategies' bookkeeping, not scaling.

    python -m benchmarks.train_scaling --model resnet18 --size 64 --batch 32
"""

from __future__ import annotations

import json
import sys

from benchmarks import harness

MODULE = "benchmarks.train_scaling"


def worker(args) -> None:
    import jax
    import numpy as np
    import optax

    import jaxcnn
    from jaxcnn.parallel import PMAP_AXIS, DataParallel
    from jaxcnn.training.state import create_train_state
    from jaxcnn.training.steps import make_train_step
    rows = []
    for strategy in ("jit", "pmap"):
        opts = {"bn_axis_name": PMAP_AXIS} if strategy == "pmap" else {}
        model = jaxcnn.create_model(args.model, **opts)
        tx = optax.sgd(0.01, momentum=0.9)
        dp = DataParallel(strategy)
        state = dp.put_state(create_train_state(model, tx, (args.size, args.size, 3), seed=0))
        step = dp.compile_train_step(make_train_step(model, tx, axis_name=PMAP_AXIS if strategy == "pmap" else None))
        rng = np.random.default_rng(0)
        batch = {"image": rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype(np.uint8),
                 "label": rng.integers(0, 1000, args.batch).astype(np.int32)}
        box = {"state": state}

        def run():
            box["state"], m = step(box["state"], dp.put_batch(batch))
            return m

        compile_s, steady = harness.first_and_steady(run, args.repeats)
        best = steady.median
        rows.append({"strategy": strategy, "devices": len(jax.devices()), "images_per_s": args.batch / best,
                     "compile_s": compile_s, "timing": steady.as_dict()})
    print(json.dumps(rows))


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--worker", action="store_true", help="(internal) measure on this process's devices")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    rows = []
    for n in args.devices:
        out = harness.run_module(MODULE, ["--worker", "--model", args.model, "--size", str(args.size),
                                          "--batch", str(args.batch), "--repeats", str(args.repeats)],
                                 XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"{args.model} train step, {args.size} px, global batch {args.batch}\n")
    print("| devices | jit img/s | pmap img/s | jit compile s | pmap compile s |\n|---|---|---|---|---|")
    for n in args.devices:
        j = next(r for r in rows if r["devices"] == n and r["strategy"] == "jit")
        p = next(r for r in rows if r["devices"] == n and r["strategy"] == "pmap")
        print(f"| {n} | {j['images_per_s']:.1f} | {p['images_per_s']:.1f} | {j['compile_s']:.1f} | "
              f"{p['compile_s']:.1f} |")
    return harness.write_result("train_scaling", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
