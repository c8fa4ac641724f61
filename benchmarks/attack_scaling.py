"""PGD images/s on 1, 2, 4 and 8 (simulated) devices: the batch is split along the ("data",) mesh.

Each device count runs in its own process (XLA_FLAGS must be set before JAX starts). On a CPU the
simulated devices share the same cores, so this checks that sharding costs little, not that it scales;
on a multi-GPU host pass --real to use the real devices.

    python benchmarks/attack_scaling.py --model resnet18 --size 64 --batch 32 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


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
    run = lambda: jax.block_until_ready(pgd(model, variables, x, y, eps=4 / 255, steps=args.steps).images)
    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    best = sorted(times)[len(times) // 2]
    print(json.dumps({"devices": len(jax.devices()), "images_per_s": args.batch / best, "s_per_run": best,
                      "compile_s": max(first - best, 0.0)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--out", help="also write the rows and the command to this JSON file")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for n in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model, "--size", str(args.size),
               "--batch", str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"PGD-{args.steps} on {args.model}, {args.size} px, batch {args.batch}\n")
    print("| devices | images/s | s per attack | compile s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['images_per_s']:.1f} | {r['s_per_run']:.2f} | {r['compile_s']:.1f} |")
    if args.out:
        command = (f"python benchmarks/attack_scaling.py --model {args.model} --size {args.size} --batch {args.batch} "
                   f"--steps {args.steps} --repeats {args.repeats} --devices {' '.join(map(str, args.devices))}")
        with open(args.out, "w") as f:
            json.dump({"command": command, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
