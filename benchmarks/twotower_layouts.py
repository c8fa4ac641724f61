"""Two-tower AlexNet: images/s of the forward and the train step in each device layout, in one run.

Layouts (same model, weights, batch, SGD-momentum step with dropout):
  single        one device, ``jax.jit(model.apply)``
  data8         ``DataParallel("jit")`` over all devices: parameters replicated, batch split
  tower1x2      ``TowerParallel`` shard_map on data=1 x model=2: one tower per device, no data parallelism
  tower4x2      ``TowerParallel`` shard_map on data=4 x model=2: towers on ``model``, batch on ``data``
  towerjit4x2   ``TowerParallel(layout="jit")`` on data=4 x model=2: the same parameter shardings, XLA's
                partitioner picks the collectives
Compile time is the first call minus a steady call; steady time is the median of ``--repeats`` calls.

By default the devices are 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set below before JAX is imported), which share
the host's cores: the numbers compare the layouts' overheads (collectives, replicated parameter
updates), not real multi-GPU scaling. On a machine with accelerators pass ``--real-devices``.

Run:
    .venv/bin/python benchmarks/twotower_layouts.py --size 127 --batch 32 --repeats 3

Result of that command (2 shared cores of a Linux x86-64 container, jax 0.10.2, flax 0.12.8, CPU backend,
8 simulated devices; other jobs were running on the same cores, so expect +-20%; 3m51s wall)::

    | layout | devices | fwd img/s | fwd ms | fwd compile s | train img/s | train ms | train compile s |
    |---|---|---|---|---|---|---|---|
    | single | 1 | 86.5 | 370.0 | 0.53 | 15.1 | 2120.0 | 4.63 |
    | data8 | 8 | 15.8 | 2029.4 | 0.14 | 1.5 | 21606.3 | 16.95 |
    | tower1x2 | 2 | 131.3 | 243.6 | 0.48 | 30.4 | 1052.6 | 3.93 |
    | tower4x2 | 8 | 95.8 | 333.9 | 0.68 | 11.0 | 2911.6 | 7.70 |
    | towerjit4x2 | 8 | 17.0 | 1884.3 | 1.14 | 2.9 | 11152.0 | 7.57 |

Reading it: the simulated devices share one memory system and two cores, and at 4 images per device the
fully connected layers (58M of the 61M parameters) are bound by reading their weights. Every replica of
``data8`` reads (and updates) all of them, every tower device half of them, so the tower layouts move
2x-8x fewer bytes; on real accelerators each device has its own memory and the comparison differs.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--real-devices" not in sys.argv:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxcnn  # noqa: E402
from jaxcnn.parallel import DataParallel  # noqa: E402
from jaxcnn.parallel.model_parallel import TowerParallel, tower_mesh  # noqa: E402
from jaxcnn.training import create_train_state, make_train_step  # noqa: E402


def _timed(fn, repeats):
    """(first call seconds, median steady seconds); ``fn()`` returns something to block on."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _layouts(model, devices):
    out = {"single": None, "data8": DataParallel("jit", devices[:8])}
    if len(devices) >= 2:
        out["tower1x2"] = TowerParallel(model, tower_mesh(devices[:2]))
    if len(devices) >= 8:
        out["tower4x2"] = TowerParallel(model, tower_mesh(devices[:8]))
        out["towerjit4x2"] = TowerParallel(model, tower_mesh(devices[:8]), layout="jit")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=127, help="square input size (>= 63)")
    ap.add_argument("--batch", type=int, default=32, help="global batch (a multiple of 8)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-devices", action="store_true", help="do not simulate 8 CPU devices")
    args = ap.parse_args()

    devices = jax.devices()
    model = jaxcnn.create_model("alexnet_twotower", num_classes=args.classes)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32),
             "label": rng.integers(0, args.classes, args.batch).astype(np.int32)}
    tx = optax.sgd(0.01, momentum=0.9)
    state0 = jax.device_get(create_train_state(model, tx, (args.size, args.size, 3), seed=0))
    variables = {"params": state0.params}

    print(f"# alexnet_twotower, {args.size}px, global batch {args.batch}, {args.classes} classes; "
          f"{len(devices)} x {devices[0].device_kind} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores); jax {jax.__version__}")
    print("| layout | devices | fwd img/s | fwd ms | fwd compile s | train img/s | train ms | train compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, layout in _layouts(model, devices).items():
        if name == "single":
            dev = devices[0]
            v, x = jax.device_put(variables, dev), jax.device_put(batch["image"], dev)
            fwd = jax.jit(lambda v, x: model.apply(v, x)[0])
            step = jax.jit(make_train_step(model, tx), donate_argnums=0)
            state, b, ndev = jax.device_put(state0, dev), jax.device_put(batch, dev), 1
        elif isinstance(layout, DataParallel):
            v, x = layout.put_state(variables), layout.put_batch(batch)["image"]
            fwd = jax.jit(lambda v, x: model.apply(v, x)[0], in_shardings=(layout.replicated, layout.batch_sharding))
            step = layout.compile_train_step(make_train_step(model, tx))
            state, b, ndev = layout.put_state(state0), layout.put_batch(batch), layout.num_devices
        else:
            v, x = layout.put_variables(variables), layout.put_batch(batch)["image"]
            fwd = layout.compile_forward(variables)
            step = layout.compile_train_step(make_train_step(layout, tx), state0)
            state, b, ndev = layout.put_state(state0), layout.put_batch(batch), layout.num_devices
        f_first, f_ms = _timed(lambda: fwd(v, x), args.repeats)
        holder = [state]

        def train():
            holder[0], metrics = step(holder[0], b)
            return metrics["loss"]

        t_first, t_ms = _timed(train, args.repeats)
        print(f"| {name} | {ndev} | {args.batch / f_ms:.1f} | {1e3 * f_ms:.1f} | {f_first - f_ms:.2f} "
              f"| {args.batch / t_ms:.1f} | {1e3 * t_ms:.1f} | {t_first - t_ms:.2f} |", flush=True)
        del state, holder, v, x, b


if __name__ == "__main__":
    main()
