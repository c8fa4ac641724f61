"""One model's inference and train-step throughput, through the path ``jaxcnn train`` runs.

The train step is the task's (``jaxcnn.training.tasks``: ``make_train_step`` for classification, the
per-pixel step for segmentation) with ``make_optimizer``'s chain, built on ``placement.step_model``
and compiled by the placement (``jaxcnn.parallel.placement``: the state replicated and donated, the
batch sharded along ``"data"``, or ``pmap``). Inference is the task's eval step (the forward in eval
mode and its sums), compiled the same way. Both read uint8 images as the loader ships them, put on
the devices once by ``placement.put_batch``: what is timed is the step, the input pipeline is
``jaxcnn.bench.pipeline``'s.

Memory: the compiled program's own analysis (arguments + outputs + temporaries - donated aliases,
per device), checked against a limit before anything runs (``memory_limit``: the device's
``bytes_limit`` where ``memory_stats()`` gives one, or a limit the caller sets), and the device's
peak in use where ``memory_stats()`` reports it (not on the CPU). A program over the limit, or one
that fails with XLA's ``RESOURCE_EXHAUSTED``, is an ``OutOfMemory``; ``measure_with_retry`` then
halves the batch.

FLOPs: ``count_flops`` (2 x MACs of conv and dense layers, forward, eval mode) per image; a training
step is counted as 3 x the forward (forward, gradient of the input, gradient of the weights).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from typing import Any

import jax
import numpy as np

from jaxcnn.bench import peak as peaks
from jaxcnn.bench.timing import throughput, time_block
from jaxcnn.model_stats import count_flops
from jaxcnn.models import create_model, model_info, model_options
from jaxcnn.parallel import placement as placements
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.optimizer import make_optimizer
from jaxcnn.training.state import create_train_state
from jaxcnn.training.tasks import task_for

MODES = ("infer", "train")
TRAIN_FLOP_FACTOR = 3
STEP_TARGET_S = 0.5      # a timed block of steps lasts about this long (--steps auto)
MAX_STEPS = 50


class OutOfMemory(RuntimeError):
    """The program does not fit: over the memory limit by its analysis, or XLA's RESOURCE_EXHAUSTED."""


@dataclasses.dataclass(frozen=True)
class Setup:
    model: str
    mode: str = "train"                 # infer | train
    batch: int = 8                      # global, over the devices
    size: int | None = None             # None: the model's native resolution
    dtype: str = "float32"
    strategy: str = "jit"
    devices: int | None = None          # the first N of jax.devices(); None: all
    repeats: int = 5
    steps: int | None = None            # steps per timed repeat; None: about STEP_TARGET_S
    warmup: int = 2
    memory_limit: int | None = None     # bytes per device; None: the device's bytes_limit, if known
    profile_dir: str | None = None      # a jax.profiler trace of a few steps there

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        placements.check_strategy(self.strategy)
        if self.strategy not in ("jit", "pmap"):
            raise ValueError(f"jaxcnn bench runs the data-parallel strategies jit and pmap, not {self.strategy!r}")
        for name in ("batch", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")


def devices_for(n: int | None) -> list:
    devices = jax.devices()
    if n is None:
        return devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"--devices {n}: JAX sees {len(devices)} device(s) ({devices[0].platform})")
    return devices[:n]


def is_resource_exhausted(err: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower()


def program_bytes(compiled) -> int | None:
    """Device memory a compiled program needs, per device, by XLA's analysis (None where it gives none)."""
    try:
        m = compiled.memory_analysis()
    except Exception:      # not every backend or program kind implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes + m.generated_code_size_in_bytes)


def device_memory(device) -> dict:
    """``{"limit", "peak"}`` bytes from ``device.memory_stats()``; None where the backend keeps none (CPU)."""
    try:
        stats = device.memory_stats() or {}
    except Exception:
        stats = {}
    return {"limit": stats.get("bytes_limit"), "peak": stats.get("peak_bytes_in_use")}


def _model(setup: Setup):
    info = model_info(setup.model)
    options = {"dtype": setup.dtype, **placements.model_options(setup.strategy, model_options(setup.model))}
    return info, create_model(setup.model, **options)


def _batch(task_name: str, batch: int, size: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label_shape = (batch, size, size) if task_name == "segmentation" else (batch,)
    return {"image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "label": rng.integers(0, num_classes, label_shape).astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """What the task's steps read of a data source, for the random batches timed here."""
    num_classes: int


def _num_classes(model) -> int:
    return int(getattr(model, "num_classes", 1000))


def _check_fits(needed: int | None, limit: int | None, batch: int) -> None:
    if needed is not None and limit is not None and needed > limit:
        raise OutOfMemory(f"batch {batch} needs {needed / 2**20:.1f} MiB per device, over the limit of "
                          f"{limit / 2**20:.1f} MiB")


def measure(setup: Setup, peak: dict | None = None) -> dict:
    """One row: throughput, compile time, memory, FLOP/s and MFU of ``setup`` (``peak``: ``peak.run_peak``'s,
    measured when not given). ``OutOfMemory`` when the program does not fit."""
    info, model = _model(setup)
    devices = devices_for(setup.devices)
    size = setup.size or info.resolution
    task = task_for(info.task)
    dp = placements.placement_for(setup.strategy, model, devices)
    dp.check_batch_size(setup.batch)
    cfg = TrainConfig(model=setup.model, image_size=size, batch_size=setup.batch, dtype=setup.dtype,
                      strategy=setup.strategy)
    tx = make_optimizer(cfg.optimizer, steps_per_epoch=1000, total_steps=100_000)
    net = dp.step_model(model)
    limit = setup.memory_limit if setup.memory_limit is not None else device_memory(devices[0])["limit"]
    host_state = create_train_state(model, tx, (size, size, 3), seed=0)
    state = dp.put_state(host_state)
    del host_state
    source = SyntheticSource(_num_classes(model))
    batch = dp.put_batch(_batch(info.task, setup.batch, size, source.num_classes))
    box: dict[str, Any] = {"state": state}
    del state
    try:
        t0 = time.perf_counter()
        if setup.mode == "train":
            fn = dp.compile_train_step(task.train_step(net, tx, cfg, dp.axis_name, source), box["state"])
            compiled = fn.lower(box["state"], batch).compile()
        else:
            fn = dp.compile_eval_step(task.eval_step(net, dp.axis_name, source), box["state"])
            compiled = fn.lower(box["state"].variables, batch).compile()
        compile_s = time.perf_counter() - t0
        needed = program_bytes(compiled)
        _check_fits(needed, limit, setup.batch)

        if setup.mode == "train":
            def step():
                box["state"], metrics = compiled(box["state"], batch)
                return metrics
        else:
            def step():
                return compiled(box["state"].variables, batch)

        sync = jax.block_until_ready
        t = time.perf_counter()
        sync(step())
        first_s = time.perf_counter() - t
        steps = setup.steps
        if steps is None:
            t = time.perf_counter()
            sync(step())
            steps = int(min(MAX_STEPS, max(1, round(STEP_TARGET_S / max(time.perf_counter() - t, 1e-6)))))
        timing = time_block(step, sync, steps=steps, repeats=setup.repeats, warmup=max(setup.warmup - 1, 0))
        trace = None
        if setup.profile_dir:
            trace = os.path.join(setup.profile_dir, f"{setup.model}-{setup.mode}-{setup.dtype}")
            with jax.profiler.trace(trace):
                for _ in range(3):
                    out = step()
                sync(out)
    except Exception as err:
        if isinstance(err, OutOfMemory):
            raise
        if is_resource_exhausted(err):
            raise OutOfMemory(f"batch {setup.batch}: {str(err).splitlines()[0][:200]}") from None
        raise
    finally:    # the device buffers go with the box (an out-of-memory retry needs them freed)
        box.clear()
    flop_per_image = count_flops(model, size)
    factor = TRAIN_FLOP_FACTOR if setup.mode == "train" else 1
    speed = throughput(setup.batch, timing)
    flop_s = factor * flop_per_image * speed["images_per_s"]
    peak = peak or peaks.run_peak(setup.dtype, devices)
    mem = device_memory(devices[0])
    return {"framework": "jaxcnn", "variant": f"jaxcnn {setup.strategy}", "model": setup.model, "mode": setup.mode,
            "batch": setup.batch, "size": size, "dtype": setup.dtype, "strategy": setup.strategy,
            "devices": len(devices), "backend": devices[0].platform, "device_kind": devices[0].device_kind,
            **speed, "steps": steps, "repeats": setup.repeats, "compile_s": compile_s,
            "first_step_s": first_s, "flop_per_image": flop_per_image,
            "flop_convention": "2 x MACs of conv/dense, forward" + (", train = 3 x forward" if factor == 3 else ""),
            "tflop_s": flop_s / 1e12, "peak_tflop_s": peak["flop_s"] / 1e12, "peak_dtype": peak["dtype"],
            "mfu": flop_s / peak["flop_s"], "program_bytes": needed, "memory_limit_bytes": limit,
            "device_peak_bytes": mem["peak"], "trace": trace}


def _smaller(batch: int, multiple: int) -> int:
    """Half of ``batch``, rounded down to a multiple of ``multiple`` (the devices); 0 when none is left."""
    return (batch // 2) // multiple * multiple


def measure_with_retry(setup: Setup, peak: dict | None = None, log=print) -> dict:
    """``measure``, halving the batch after each ``OutOfMemory`` until it fits; the row's ``note`` and
    ``requested_batch`` say so. A batch that does not fit even on one example per device raises."""
    multiple = len(devices_for(setup.devices))
    notes, current = [], setup
    while True:
        try:
            row = measure(current, peak)
            break
        except OutOfMemory as err:
            smaller = _smaller(current.batch, multiple)
            gc.collect()
            if smaller < 1:
                raise OutOfMemory(f"{setup.model} {setup.mode}: out of memory even at batch {current.batch} "
                                  f"({err})") from None
            message = f"out of memory at batch {current.batch} ({err}); retried with batch {smaller}"
            log(f"{setup.model} {setup.mode}: {message}")
            notes.append(message)
            current = dataclasses.replace(current, batch=smaller)
    return {**row, "requested_batch": setup.batch, "oom_retries": len(notes), "note": "; ".join(notes)}

