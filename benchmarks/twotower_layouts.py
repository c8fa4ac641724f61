"""Two-tower AlexNet: images/s of the forward and the train step in each device layout, in one run.

Layouts (same model, weights, batch, SGD-momentum step with dropout):
  single        one device, ``jax.jit(model.apply)``
  data8         ``DataParallel("jit")`` over all devices: parameters replicated, batch split
  tower1x2      ``TowerParallel`` shard_map on data=1 x model=2: one tower per device, no data parallelism
  tower4x2      ``TowerParallel`` shard_map on data=4 x model=2: towers on ``model``, batch on ``data``
  towerjit4x2   ``TowerParallel(layout="jit")`` on data=4 x model=2: the same parameter shardings, XLA's
                partitioner picks the collectives
Compile time is the first call minus a steady call; steady time is the median of ``--repeats`` calls.

By default the devices are 8 simulated CPU devices (``jax_num_cpu_devices``, set before JAX starts its
backend), which share the host's cores: the numbers compare the layouts' overheads (collectives,
replicated parameter updates), not real multi-GPU scaling. There the fully connected layers (58M of the
61M parameters) at a few images per device are bound by reading their weights: every replica of
``data8`` reads (and updates) all of them, every tower device half of them. On a machine with
accelerators pass ``--real-devices``.

    python -m benchmarks.twotower_layouts --size 127 --batch 32 --repeats 3
"""

from __future__ import annotations

import os
import sys

from benchmarks import harness

MODULE = "benchmarks.twotower_layouts"


def _layouts(model, devices):
    from jaxcnn.parallel import DataParallel
    from jaxcnn.parallel.model_parallel import TowerParallel, tower_mesh

    out = {"single": None, "data8": DataParallel("jit", devices[:8])}
    if len(devices) >= 2:
        out["tower1x2"] = TowerParallel(model, tower_mesh(devices[:2]))
    if len(devices) >= 8:
        out["tower4x2"] = TowerParallel(model, tower_mesh(devices[:8]))
        out["towerjit4x2"] = TowerParallel(model, tower_mesh(devices[:8]), layout="jit")
    return out


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--size", type=int, default=127, help="square input size (>= 63)")
    ap.add_argument("--batch", type=int, default=32, help="global batch (a multiple of 8)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-devices", action="store_true", help="do not simulate 8 CPU devices")
    args = ap.parse_args(argv)
    import jax

    if not args.real_devices:
        jax.config.update("jax_num_cpu_devices", 8)     # before the backend starts: a fresh process
        jax.config.update("jax_platforms", "cpu")
    import numpy as np
    import optax

    import jaxcnn
    from jaxcnn.parallel import DataParallel
    from jaxcnn.training import create_train_state, make_train_step

    devices = jax.devices()
    model = jaxcnn.create_model("alexnet_twotower", num_classes=args.classes)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32),
             "label": rng.integers(0, args.classes, args.batch).astype(np.int32)}
    tx = optax.sgd(0.01, momentum=0.9)
    state0 = jax.device_get(create_train_state(model, tx, (args.size, args.size, 3), seed=0))
    variables = {"params": state0.params}

    print(f"# alexnet_twotower, {args.size}px, global batch {args.batch}, {args.classes} classes; "
          f"{len(devices)} x {devices[0].device_kind} ({harness.machine()['cpu']}, {os.cpu_count()} cores); "
          f"jax {jax.__version__}")
    print("| layout | devices | fwd img/s | fwd ms | fwd compile s | train img/s | train ms | train compile s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
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
        f_compile, f_t = harness.first_and_steady(lambda: fwd(v, x), args.repeats)
        holder = [state]

        def train():
            holder[0], metrics = step(holder[0], b)
            return metrics["loss"]

        t_compile, t_t = harness.first_and_steady(train, args.repeats)
        rows.append({"layout": name, "devices": ndev, "forward_img_s": args.batch / f_t.median,
                     "forward_compile_s": f_compile, "train_img_s": args.batch / t_t.median,
                     "train_compile_s": t_compile,
                     "forward": f_t, "train": t_t})
        print(f"| {name} | {ndev} | {args.batch / f_t.median:.1f} | {f_t.ms:.1f} | {f_compile:.2f} "
              f"| {args.batch / t_t.median:.1f} | {t_t.ms:.1f} | {t_compile:.2f} |", flush=True)
    return harness.write_result("twotower_layouts", MODULE, argv, rows, out=args.out, settings=harness.settings(args))


if __name__ == "__main__":
    main()
