"""One train step on an accelerator against the CPU reference: the same weights, batch and step, compared.

    python -m benchmarks.train_agreement [--model resnet18] [--size 224] [--batch 8] [--out FILE]
    python -m benchmarks.train_agreement --dry-run      # no accelerator: the CPU fast path against the reference

The step is ``jaxcnn train``'s (the placement on one device, the task's train step with
``make_optimizer``'s SGD-momentum and weight decay, the batch norm statistics updated), run once on
each device from one host copy of the initial state and one uint8 batch. The reference is the CPU in
``cpu.mode("reference")`` (XLA's own lowerings). Compared, each as max |test - reference| / max |reference|:
the loss, the parameter update (new - old, over every leaf: what one step changed) and the updated
batch-norm statistics.

On a GPU the step runs twice: at ``highest`` matmul precision (float32 products throughout; it must
meet ``TOLERANCE``) and at JAX's default (TensorFloat-32 convolutions and products on Ampere and
later, reported against ``TF32_TOLERANCE``). With ``--dry-run`` the test side is the CPU's default mode
(the oneDNN and Winograd fast paths, where built), which must meet ``TOLERANCE`` too.
"""

from __future__ import annotations

import json
import sys

from benchmarks import harness

MODULE = "benchmarks.train_agreement"
TOLERANCE = {"loss": 1e-4, "update": 2e-3, "batch_stats": 1e-3}
TF32_TOLERANCE = {"loss": 1e-2, "update": 5e-2, "batch_stats": 2e-2}


def _relative(test, ref) -> float:
    import numpy as np

    scale = max(float(np.max(np.abs(ref))), 1e-30)
    return float(np.max(np.abs(np.asarray(test, np.float64) - np.asarray(ref, np.float64)))) / scale


def _tree_relative(test, ref) -> float:
    """max |test - ref| over all leaves, over max |ref| over all leaves."""
    import jax
    import numpy as np

    t, r = jax.tree.leaves(test), jax.tree.leaves(ref)
    scale = max(max(float(np.max(np.abs(x))) for x in r), 1e-30)
    worst = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for a, b in zip(t, r))
    return worst / scale


def optimizer():
    """SGD-momentum with weight decay at a constant rate: the first step already moves the weights (the
    default recipe warms up from a rate of 0)."""
    from jaxcnn.training.optimizer import OptimizerConfig

    return OptimizerConfig(learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="constant")


def one_step(name: str, device, host_state, batch: dict, size: int, mode: str = "auto",
             precision: str | None = None) -> dict:
    """The loss, the parameter update and the new batch statistics of one train step on ``device``, on the host."""
    import jax

    from jaxcnn import cpu
    from jaxcnn.bench.measure import SyntheticSource, num_classes
    from jaxcnn.models import create_model, model_info
    from jaxcnn.parallel.placement import placement_for
    from jaxcnn.training.config import TrainConfig
    from jaxcnn.training.optimizer import make_optimizer
    from jaxcnn.training.tasks import task_for

    model = create_model(name)
    cfg = TrainConfig(model=name, image_size=size, batch_size=len(batch["image"]), optimizer=optimizer())
    tx = make_optimizer(cfg.optimizer, steps_per_epoch=1000, total_steps=100_000)
    dp = placement_for("jit", model, [device])
    # a copy: on the CPU device_put may alias the host arrays, which the step's donation then overwrites
    state = dp.put_state(jax.tree.map(lambda a: a.copy(), host_state))
    step = dp.compile_train_step(task_for(model_info(name).task).train_step(
        dp.step_model(model), tx, cfg, dp.axis_name, SyntheticSource(num_classes(model))), state)
    with cpu.mode(mode), jax.default_matmul_precision(precision):   # both read when the step is traced
        new, metrics = step(state, dp.put_batch(batch))
    new, metrics = jax.device_get((new, metrics))
    update = jax.tree.map(lambda a, b: a.astype("float64") - b, new.params, host_state.params)
    return {"loss": metrics["loss"], "update": update, "batch_stats": new.batch_stats}


def compare(test: dict, ref: dict) -> dict:
    return {"loss": _relative(test["loss"], ref["loss"]), "update": _tree_relative(test["update"], ref["update"]),
            "batch_stats": _tree_relative(test["batch_stats"], ref["batch_stats"])}


def agreement(name: str = "resnet18", size: int = 224, batch: int = 8, dry_run: bool = False) -> dict:
    """The errors of each test run against the CPU reference, and whether each is within its tolerance."""
    import jax
    import numpy as np

    from jaxcnn.bench.measure import num_classes
    from jaxcnn.models import create_model
    from jaxcnn.training.optimizer import make_optimizer
    from jaxcnn.training.state import create_train_state

    cpu_device = jax.devices("cpu")[0]
    tx = make_optimizer(optimizer(), steps_per_epoch=1000, total_steps=100_000)
    model = create_model(name)
    host_state = jax.device_get(create_train_state(model, tx, (size, size, 3), seed=0))
    rng = np.random.default_rng(0)
    # smooth images (a low-resolution pattern upsampled), not white noise, and their labels
    low = rng.integers(0, 256, (batch, size // 16 + 1, size // 16 + 1, 3))
    images = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :size, :size].astype(np.uint8)
    data = {"image": images, "label": rng.integers(0, num_classes(model), batch).astype(np.int32)}
    ref = one_step(name, cpu_device, host_state, data, size, mode="reference")
    if dry_run:
        runs = [("cpu, default mode (fast paths)", cpu_device, "auto", None, TOLERANCE)]
    else:
        accel = next(d for d in jax.devices() if d.platform != "cpu")
        runs = [(f"{accel.device_kind}, highest precision", accel, "auto", "highest", TOLERANCE),
                (f"{accel.device_kind}, default precision", accel, "auto", None, TF32_TOLERANCE)]
    rows = []
    for label, device, mode, precision, tolerance in runs:
        errors = compare(one_step(name, device, host_state, data, size, mode=mode, precision=precision), ref)
        rows.append({"test": label, "errors": errors, "tolerance": tolerance,
                     "within": all(errors[k] <= tolerance[k] for k in errors)})
    return {"model": name, "size": size, "batch": batch, "reference": "cpu, reference mode (XLA's own lowerings)",
            "loss": float(ref["loss"]), "rows": rows, "ok": rows[0]["within"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = harness.parser(MODULE, __doc__, keep_heap_option=False)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dry-run", action="store_true", help="no accelerator: the CPU fast path as the test side")
    args = ap.parse_args(argv)
    result = agreement(args.model, args.size, args.batch, args.dry_run)
    for row in result["rows"]:
        errs = ", ".join(f"{k} {v:.1e} (<= {row['tolerance'][k]:.0e})" for k, v in row["errors"].items())
        print(f"{result['model']} {result['size']} px batch {result['batch']}: {row['test']} against "
              f"{result['reference']}: {errs}: {'within' if row['within'] else 'OUTSIDE'} the tolerance")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
