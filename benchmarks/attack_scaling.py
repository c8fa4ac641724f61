"""PGD images/s on 1, 2, 4 and 8 (simulated) devices: the batch is split along the ("data",) mesh.

Each device count runs in its own process (XLA_FLAGS must be set before JAX starts). On a CPU the
simulated devices share the same cores, so this checks that sharding costs little, not that it scales;
on a multi-GPU host pass --real to use the real devices.

    python -m benchmarks.attack_scaling --model resnet18 --size 64 --batch 32 --steps 5
"""

from __future__ import annotations

import json
import sys

from benchmarks import harness

MODULE = "benchmarks.attack_scaling"


def worker(args) -> None:
    import jax
    import numpy as np

    import jaxcnn
    from jaxcnn.inputopt.attacks import pgd
    model = jaxcnn.create_model(args.model)
    variables = jaxcnn.init_variables(model, args.size)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch)
    run = lambda: pgd(model, variables, x, y, eps=4 / 255, steps=args.steps).images  # noqa: E731
    compile_s, steady = harness.first_and_steady(run, args.repeats)
    best = steady.median
    print(json.dumps({"devices": len(jax.devices()), "images_per_s": args.batch / best, "s_per_run": best,
                      "compile_s": compile_s, "timing": steady.as_dict()}))


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
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
                                          "--batch", str(args.batch), "--steps", str(args.steps),
                                          "--repeats", str(args.repeats)],
                                 XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"PGD-{args.steps} on {args.model}, {args.size} px, batch {args.batch}\n")
    print("| devices | images/s | s per attack | compile s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['images_per_s']:.1f} | {r['s_per_run']:.2f} | {r['compile_s']:.1f} |")
    return harness.write_result("attack_scaling", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
