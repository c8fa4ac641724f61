"""One model's inference and train-step throughput, through the path ``jaxcnn train`` runs.

The train step is the task's (``jaxcnn.training.tasks``: ``make_train_step`` for classification, the
per-pixel step for segmentation) with ``make_optimizer``'s chain, built on ``placement.step_model``
and compiled by the placement (``jaxcnn.parallel.placement``: the state replicated and donated, the
batch sharded along ``"data"``, or ``pmap``). Inference is the task's eval step (the forward in eval
mode and its sums), compiled the same way. Both read uint8 images as the loader ships them, put on
the devices once by ``placement.put_batch``: what is timed is the step, the input pipeline is
``jaxcnn.bench.pipeline``'s. ``prepare`` gives the compiled step as a ``Case`` to callers that time
it their own way (``benchmarks/models_vs_torch.py`` alternates cases); ``measure`` times it here.

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
import math
import os
import time
from typing import Any

import jax
import numpy as np

from jaxcnn.bench import peak as peaks
from jaxcnn.bench.timing import auto_steps, throughput, time_block
from jaxcnn.model_stats import count_flops
from jaxcnn.models import create_model, model_info, model_options
from jaxcnn.parallel import placement as placements
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.optimizer import make_optimizer
from jaxcnn.training.state import create_train_state
from jaxcnn.training.tasks import task_for

MODES = ("infer", "train")
TRAIN_FLOP_FACTOR = 3
PROFILE_STEPS = 3        # steps in a --profile trace
ACCELERATOR_BATCH = 256  # default batch per GPU or TPU (timm's benchmark.py uses 256 too)
CPU_BATCH_GFLOP = 128    # default CPU batch: about this many GFLOP of forward per batch (ResNet-50: 16)
CPU_MAX_BATCH = 64


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


def default_batch(name: str, size: int | None, devices: list) -> int:
    """The global batch ``jaxcnn bench`` uses when none is given: ``ACCELERATOR_BATCH`` per device on GPUs and
    TPUs; on the CPU the power of two nearest ``CPU_BATCH_GFLOP`` of forward FLOPs per batch (1 to
    ``CPU_MAX_BATCH``), rounded up to a multiple of the devices. Too large a batch is halved by
    ``measure_with_retry``."""
    n = len(devices)
    if devices[0].platform != "cpu":
        return ACCELERATOR_BATCH * n
    flops = count_flops(create_model(name), size or model_info(name).resolution)
    per = 2 ** round(math.log2(max(1.0, CPU_BATCH_GFLOP * 1e9 / max(flops, 1))))
    per = min(per, CPU_MAX_BATCH)
    return -(-per // n) * n


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


def num_classes(model) -> int:
    return int(getattr(model, "num_classes", 1000))


def _check_fits(needed: int | None, limit: int | None, batch: int) -> None:
    if needed is not None and limit is not None and needed > limit:
        raise OutOfMemory(f"batch {batch} needs {needed / 2**20:.1f} MiB per device, over the limit of "
                          f"{limit / 2**20:.1f} MiB")


class Case:
    """One setup's compiled step, ready to time: ``step()`` runs one step (the train step carries its donated
    state along) and returns its outputs; ``close()`` frees the device buffers (an out-of-memory retry needs
    them gone). ``prepare`` builds it."""

    def __init__(self, setup: Setup, model, size: int, devices: list, compiled, box: dict, batch, compile_s: float,
                 program_bytes: int | None, memory_limit: int | None):
        self.setup, self.model, self.size, self.devices = setup, model, size, devices
        self.compile_s, self.program_bytes, self.memory_limit = compile_s, program_bytes, memory_limit
        self._compiled, self._box, self._batch = compiled, box, batch

    def step(self):
        box = self._box
        if self.setup.mode == "train":
            box["state"], metrics = self._compiled(box["state"], self._batch)
            return metrics
        return self._compiled(box["state"].variables, self._batch)

    @property
    def variables(self):
        """The model's variables as the case holds them (on its devices)."""
        return self._box["state"].variables

    def flop_per_image(self) -> int:
        return count_flops(self.model, self.size)

    def close(self) -> None:
        self._box.clear()
        self._batch = self._compiled = None


def prepare(setup: Setup) -> Case:
    """``setup``'s model, state and batch on its devices and its step compiled by the placement, checked against
    the memory limit; ``OutOfMemory`` when it does not fit (nothing is left on the devices then)."""
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
    box: dict[str, Any] = {}
    try:
        host_state = create_train_state(model, tx, (size, size, 3), seed=0)
        box["state"] = dp.put_state(host_state)
        del host_state
        source = SyntheticSource(num_classes(model))
        batch = dp.put_batch(_batch(info.task, setup.batch, size, source.num_classes))
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
    except Exception as err:
        box.clear()
        if isinstance(err, OutOfMemory):
            raise
        if is_resource_exhausted(err):
            raise OutOfMemory(f"batch {setup.batch}: {str(err).splitlines()[0][:200]}") from None
        raise
    return Case(setup, model, size, devices, compiled, box, batch, compile_s, needed, limit)


def measure(setup: Setup, peak: dict | None = None) -> dict:
    """One row: throughput, compile time, memory, FLOP/s and MFU of ``setup`` (``peak``: ``peak.run_peak``'s,
    measured when not given). ``OutOfMemory`` when the program does not fit."""
    case = prepare(setup)
    sync = jax.block_until_ready
    try:
        t = time.perf_counter()
        sync(case.step())
        first_s = time.perf_counter() - t
        steps = setup.steps or auto_steps(case.step, sync)
        timing = time_block(case.step, sync, steps=steps, repeats=setup.repeats, warmup=max(setup.warmup - 1, 0))
        trace = None
        if setup.profile_dir:
            trace = os.path.join(setup.profile_dir, f"{setup.model}-{setup.mode}-{setup.dtype}")
            with jax.profiler.trace(trace):
                for _ in range(PROFILE_STEPS):
                    out = case.step()
                sync(out)
    except Exception as err:
        if is_resource_exhausted(err):
            raise OutOfMemory(f"batch {setup.batch}: {str(err).splitlines()[0][:200]}") from None
        raise
    finally:    # the device buffers go (an out-of-memory retry needs them freed)
        case.close()
    flop_per_image = case.flop_per_image()
    factor = TRAIN_FLOP_FACTOR if setup.mode == "train" else 1
    speed = throughput(setup.batch, timing)
    flop_s = factor * flop_per_image * speed["images_per_s"]
    peak = peak or peaks.run_peak(setup.dtype, case.devices)
    mem = device_memory(case.devices[0])
    device = case.devices[0]
    return {"framework": "jaxcnn", "variant": f"jaxcnn {setup.strategy}", "model": setup.model, "mode": setup.mode,
            "batch": setup.batch, "size": case.size, "dtype": setup.dtype, "strategy": setup.strategy,
            "devices": len(case.devices), "backend": device.platform, "device_kind": device.device_kind,
            **speed, "steps": steps, "repeats": setup.repeats, "compile_s": case.compile_s,
            "first_step_s": first_s, "flop_per_image": flop_per_image,
            "flop_convention": "2 x MACs of conv/dense, forward" + (", train = 3 x forward" if factor == 3 else ""),
            "tflop_s": flop_s / 1e12, "peak_tflop_s": peak["flop_s"] / 1e12, "peak_dtype": peak["dtype"],
            "mfu": flop_s / peak["flop_s"], "program_bytes": case.program_bytes,
            "memory_limit_bytes": case.memory_limit, "device_peak_bytes": mem["peak"], "trace": trace}


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

