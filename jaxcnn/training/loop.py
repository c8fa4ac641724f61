"""The training loop: data -> jitted step -> periodic actions (log, eval, checkpoint), resumable.

Everything inside a step is one compiled program; logging, evaluation,
checkpointing and the progress bar happen between steps on the host. The
data position is the step (``jaxcnn.data.loader``), the dropout key is
derived from the step, and checkpoints hold the whole state, so a run killed
at any moment and restarted ends bit-identical to an uninterrupted one.

Between the host's sync points (a log row every ``log_every_steps``, an
evaluation, a checkpoint) the steps make no device-to-host transfer: each
step's metrics stay on the device until the next sync point fetches them all,
and the NaN check of those steps runs there, before any checkpoint is written.
The train step is compiled once for the whole run (``tests/test_loop_transfers.py``).

The loop has one path: the task object (``jaxcnn.training.tasks``, from
``model_info(cfg.model).task``) gives the steps, the augmentation, the eval
summary and the watched metric; the placement (``jaxcnn.parallel.placement``,
from ``cfg.strategy``) puts state and batches on devices and compiles the steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxcnn.data.sources import TransformedSource, get_source
from jaxcnn.data.transforms import make_eval_transform
from jaxcnn.model_stats import count_flops, init_variables
from jaxcnn.models import create_model, model_info, model_options
from jaxcnn.parallel import placement as placements
from jaxcnn.parallel.placement import Placement
from jaxcnn.training import segmentation as seg
from jaxcnn.training import workdir as run_dir
from jaxcnn.training.checkpoint import Checkpointer, diverged_message
from jaxcnn.training.config import TrainConfig, eval_size, to_dict
from jaxcnn.training.metrics_log import MetricsLog, plot_curves
from jaxcnn.training.optimizer import PlateauControl, make_optimizer, plateau_factor
from jaxcnn.training.state import create_train_state, variables_of
from jaxcnn.training.steps import check_ema, with_ema
from jaxcnn.training.tasks import Classification, task_for

INPUT_BOUND = 0.25   # warn when the host waits for batches this share of the time


def step_context():
    """The context each step's host work (next batch, dispatch of the step) runs in; nothing by default.
    Tests install ``jax.transfer_guard_device_to_host("disallow")`` here."""
    return contextlib.nullcontext()


def parse_profile_steps(spec: str | None) -> tuple[int, int] | None:
    """``"START:STOP"`` -> ``(START, STOP)``: trace the steps START+1 .. STOP (1-based, as logged)."""
    if spec is None or spec == "":
        return None
    try:
        start, stop = (int(v) for v in str(spec).split(":"))
    except ValueError:
        raise ValueError(f"profile_steps must be 'START:STOP' (two step numbers), got {spec!r}") from None
    if not 0 <= start < stop:
        raise ValueError(f"profile_steps {spec!r}: need 0 <= START < STOP")
    return start, stop


def device_peak(dtype: str, devices: list) -> float | None:
    """The run's peak FLOP/s for MFU (``jaxcnn.bench.peak``, measured once per device kind and cached), or
    None where that module is absent."""
    try:
        from jaxcnn.bench.peak import run_peak
    except ImportError:
        return None
    return run_peak(dtype, devices)["flop_s"]


def train_stream(cfg: TrainConfig, source, augment, start: int, num_steps: int):
    """This process's slice of the run's global batches ``start, start + 1, ...`` on the host, as the loader
    (``jaxcnn.data.loader``) makes them; ``jaxcnn.bench.pipeline`` times the same stream."""
    from jaxcnn.data.loader import train_batches   # grain: imported when data flows, not with the package

    return train_batches(source, global_batch=cfg.batch_size, seed=cfg.seed, augment=augment, start_step=start,
                         num_steps=num_steps, process_index=jax.process_index(), process_count=jax.process_count(),
                         workers=data_workers(cfg))


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step and the last good checkpoint."""


def build_model(cfg: TrainConfig, num_classes: int):
    """The run's model, with the data set's number of classes (``model_options.num_classes`` must agree)."""
    asked = cfg.model_options.get("num_classes")
    if asked is not None and asked != num_classes:
        raise ValueError(f"model_options.num_classes={asked} but {cfg.dataset} has {num_classes} classes; "
                         "leave num_classes unset (it follows the data set) or train on a data set with that many")
    options = dict(cfg.model_options, num_classes=num_classes, dtype=cfg.dtype)
    options.update(placements.model_options(cfg.strategy, model_options(cfg.model)))
    return create_model(cfg.model, **options)


def data_workers(cfg: TrainConfig) -> int:
    """The run's loader processes: ``cfg.data_workers``, else ``default_workers`` for this backend."""
    from jaxcnn.data.loader import resolve_workers   # grain: imported when data flows

    return resolve_workers(cfg.data_workers)


def _pretrained(cfg: TrainConfig, image_shape, num_classes: int):
    """The variables of ``cfg.pretrained``; one-line errors for a file of another model or of a number of classes
    other than the data set's (the shapes would clash deep inside the first step)."""
    from jaxcnn.weights.torchvision import load_pretrained
    try:
        pre, variables = load_pretrained(cfg.model, cfg.pretrained, **dict(cfg.model_options))
    except ValueError as e:
        raise ValueError(f"pretrained={cfg.pretrained} is not a {cfg.model} weight file: "
                         f"{str(e).splitlines()[0]}") from None
    norm = getattr(pre, "normalization", None)   # a wrapped (robust) model's own input normalization
    if norm is not None and not norm.is_imagenet():
        raise ValueError(f"{cfg.pretrained}: its model normalizes its input with mean {norm.mean}, std "
                         f"{norm.std}, not ImageNet's, which training feeds; fine-tune it from a file "
                         "of ImageNet-normalized weights")
    if model_info(cfg.model).task == "classification":
        logits, _ = jax.eval_shape(lambda v, x: pre.apply(v, x, train=False), variables,
                                   jax.ShapeDtypeStruct((1, *image_shape), jax.numpy.float32))
        if logits.shape[-1] != num_classes:
            raise ValueError(f"pretrained={cfg.pretrained} ({cfg.model}) scores {logits.shape[-1]} classes but "
                             f"{cfg.dataset} has {num_classes}; give weights of a model with {num_classes} classes")
    return variables


def evaluate(dp: Placement, eval_step, variables, source, global_batch: int,
             summarize=Classification().summarize, workers: int = 0) -> dict[str, float]:
    """Metrics over a whole source (padding masked out): the eval step's sums, added up, then ``summarize``d
    (the task's: loss, top-1 and top-5, or loss, mIoU and pixel accuracy)."""
    from jaxcnn.data.loader import eval_batches   # grain: imported when data flows, not with the package

    totals: dict[str, np.ndarray] = {}
    for batch in eval_batches(source, global_batch=global_batch, process_index=jax.process_index(),
                              process_count=jax.process_count(), workers=workers):
        sums = jax.device_get(eval_step(variables, dp.put_batch(batch)))
        for k, v in sums.items():
            v = np.asarray(v, np.int64 if np.issubdtype(np.asarray(v).dtype, np.integer) else np.float64)
            totals[k] = totals[k] + v if k in totals else v
    return summarize(totals)


def train(cfg: TrainConfig, *, progress: bool = True, reuse: str | None = None) -> dict[str, Any]:
    """Runs (or resumes) the configured training; returns final metrics and output paths.

    ``reuse`` (None, "resume", "overwrite"): what to do with a workdir holding a run of another config
    (``jaxcnn.training.workdir``); a finished run is not trained again.
    """
    task = task_for(model_info(cfg.model).task)
    source_options = {"size": cfg.image_size, **({"data_dir": cfg.data_dir} if cfg.data_dir else {})}
    train_src = get_source(cfg.dataset, "train", **source_options)
    test_src = get_source(cfg.dataset, "test", **source_options)
    if cfg.eval_transform != "none":  # variable-size data: a deterministic eval crop
        test_src = TransformedSource(test_src, make_eval_transform(eval_size(cfg), cfg.eval_transform,
                                                                   **cfg.eval_options))
    elif cfg.eval_image_size not in (None, cfg.image_size) or cfg.eval_options:
        raise ValueError("eval_image_size and eval_options apply to an eval_transform (center, pad); "
                         "eval_transform=none scores the data set's own images")
    train_src, test_src = task.prepare(cfg, train_src, test_src)
    if cfg.backbone_weights and cfg.pretrained:
        raise ValueError("give either pretrained (the whole model) or backbone_weights, not both")
    model = build_model(cfg, train_src.num_classes)
    # what the model sees: the source's own shape, or the transform's output size for variable-size data
    image_shape = getattr(train_src, "image_shape", None) if cfg.augment == "shift" else None
    image_shape = tuple(image_shape or (cfg.image_size, cfg.image_size, 3))
    dp = placements.placement_for(cfg.strategy, model)
    dp.check_batch_size(cfg.batch_size)
    dp.check_batch_size(cfg.eval_batch_size)
    shards = dp.data_size
    if cfg.batch_size % cfg.accum_steps or (cfg.batch_size // cfg.accum_steps) % shards:
        raise ValueError(f"batch {cfg.batch_size} does not split into {cfg.accum_steps} micro-batches "
                         f"divisible over {shards} devices")
    steps_per_epoch = len(train_src) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch {cfg.batch_size} is larger than the training set ({len(train_src)})")
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    check_ema(cfg.ema_decay, cfg.ema_every, cfg.ema_warmup)
    profile = parse_profile_steps(cfg.profile_steps)
    if cfg.prefetch_batches < 1:
        raise ValueError(f"prefetch_batches must be >= 1, got {cfg.prefetch_batches}")
    workers = data_workers(cfg)
    tx = make_optimizer(cfg.optimizer, steps_per_epoch, math.ceil(cfg.epochs * steps_per_epoch))
    variables = None
    if cfg.pretrained:
        variables = _pretrained(cfg, image_shape, train_src.num_classes)
    if cfg.backbone_weights:
        variables = init_variables(model, image_shape[:2], seed=cfg.seed, channels=image_shape[2])
        variables = seg.load_backbone(cfg.model, cfg.backbone_weights, variables)
    state = create_train_state(model, tx, image_shape, seed=cfg.seed, variables=variables, ema=cfg.ema_decay > 0)

    lead = jax.process_index() == 0
    run_dir.prepare(cfg, reuse, lead=lead)
    ckpt = Checkpointer(os.path.join(cfg.workdir, "checkpoints"), every_steps=cfg.checkpoint_every_steps,
                        keep=cfg.keep_checkpoints)
    plateau = PlateauControl(factor=cfg.optimizer.decay_factor, patience=cfg.optimizer.plateau_patience,
                             min_delta=cfg.optimizer.plateau_min_delta)
    state = jax.device_put(state, dp.replicated)
    if ckpt.latest_step() is not None:
        meta = ckpt.read_meta()
        if meta.get("model") != cfg.model:
            raise ValueError(f"{ckpt.directory} holds a checkpoint of {meta.get('model')!r}, not {cfg.model!r}; "
                             "use another workdir")
        state, meta = ckpt.restore(state)
        plateau.load_state_dict(meta["plateau"])
    start = int(jax.device_get(state.step))
    state = dp.put_state(state)
    if start >= total_steps and start > 0:   # a finished run: report it, train nothing
        ckpt.close()
        return {**run_dir.finished_run(cfg.workdir, start, total_steps, os.path.join(cfg.workdir, "metrics.jsonl")),
                "checkpoints": ckpt.directory, "state": state, "data_parallel": dp}

    net = dp.step_model(model)
    train_step = dp.compile_train_step(with_ema(task.train_step(net, tx, cfg, dp.axis_name, train_src),
                                                cfg.ema_decay, cfg.ema_every, cfg.ema_warmup), state)
    eval_step = dp.compile_eval_step(task.eval_step(net, dp.axis_name, train_src), state)
    augment = task.augment(cfg, train_src)
    log = MetricsLog(cfg.workdir, enabled=lead, start_step=start)
    meta_base = {"model": cfg.model, "config": _jsonable(to_dict(cfg))}

    def save(step: int, force: bool = False) -> None:
        ckpt.save(step, dp.unreplicate(state), {**meta_base, "step": step, "plateau": plateau.state_dict()},
                  force=force)

    batches = train_stream(cfg, train_src, augment, start, total_steps - start)
    device_batches = dp.prefetch(batches, cfg.prefetch_batches)   # host->device copies overlap the running step
    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True)
    pending, window, t_window, eval_metrics = [], [], time.perf_counter(), {}
    data_wait, warned_input, tracing = 0.0, False, False
    train_flops = 3 * count_flops(model, image_shape[:2])   # per image: forward + backward (2x forward)
    peak: list[float | None] = []

    def check() -> None:
        """Fetches the pending steps' metrics (one transfer for all of them); stops at the first non-finite."""
        for host, step in zip(jax.device_get([m for m, _ in pending]), [s for _, s in pending]):
            if host["finite"] < 1:
                raise TrainingDiverged(diverged_message(ckpt, step + 1, dp.unreplicate(state)))
            window.append(host)
        pending.clear()

    try:
        for step in range(start, total_steps):
            done = step + 1
            with step_context():   # the per-step host work, which moves nothing from the devices
                if profile is not None and step == profile[0]:
                    jax.profiler.start_trace(os.path.join(cfg.workdir, "profile"))
                    tracing = True
                t_data = time.perf_counter()
                batch = next(device_batches)
                data_wait += time.perf_counter() - t_data
                state, metrics = train_step(state, batch)
                pending.append((metrics, step))   # stays on the device until the next sync point
                if tracing and done == profile[1]:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    tracing = False
                if bar is not None:
                    bar.update(1)
                log_now = done % cfg.log_every_steps == 0 or done == total_steps
                eval_now = done % steps_per_epoch == 0 or done == total_steps
                save_now = ckpt.will_save(done, force=done == total_steps)
            # the sync points: metrics fetched and checked, evaluation, checkpoints
            if log_now:
                check()
                now = time.perf_counter()
                rate = len(window) * cfg.batch_size / max(now - t_window, 1e-9)
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0] if k != "finite"}
                lr = plateau_factor(dp.unreplicate(state).opt_state)
                # the share of the window the host spent waiting for batches: high means input-bound
                wait = data_wait / max(now - t_window, 1e-9)
                if not peak:
                    peak.append(device_peak(cfg.dtype, getattr(dp, "devices", jax.devices())))
                speed = {"tflop_s": rate * train_flops / 1e12}
                if peak[0]:
                    speed["mfu"] = rate * train_flops / peak[0]
                log.write(done, **{f"train/{k}": v for k, v in mean.items()}, images_per_s=rate, lr_factor=lr,
                          input_wait=wait, **speed)
                if wait > INPUT_BOUND and not warned_input and lead:
                    warned_input = True
                    print(f"warning: input-bound: {100 * wait:.0f}% of the time went to waiting for batches; "
                          "the accelerator is starved (more loader processes: data_workers=N; lighter augmentation; "
                          "or cached data)",
                          file=sys.stderr)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean['loss']:.3f}", img_s=f"{rate:.0f}",
                                    **({"input": "BOUND"} if wait > INPUT_BOUND else {}))
                window, t_window, data_wait = [], time.perf_counter(), 0.0
            if eval_now:
                check()   # evaluate only checked steps
                eval_metrics = evaluate(dp, eval_step, state.variables, test_src, cfg.eval_batch_size,
                                        task.summarize, workers)
                if state.ema:   # the average beside the raw weights
                    eval_metrics.update({f"ema_{k}": v for k, v in evaluate(
                        dp, eval_step, variables_of(state, ema=True), test_src, cfg.eval_batch_size,
                        task.summarize, workers).items()})
                log.write(done, **{f"eval/{k}": v for k, v in eval_metrics.items()})
                if cfg.optimizer.schedule == "plateau":
                    host = dp.unreplicate(state)
                    new_opt = plateau.update(1.0 - eval_metrics[task.watched], host.opt_state)
                    if new_opt is not host.opt_state:  # the learning rate was divided: re-place the state
                        state = dp.put_state(host.replace(opt_state=new_opt))
            if save_now:
                check()   # a checkpoint only of checked steps
                save(done, force=done == total_steps)
        check()
    finally:
        if tracing:
            jax.profiler.stop_trace()
        if bar is not None:
            bar.close()
        ckpt.close()
        log.close()
    result = {"step": int(jax.device_get(dp.unreplicate(state).step)), "eval": eval_metrics,
              "checkpoints": ckpt.directory, "metrics": log.path, "state": state, "data_parallel": dp}
    if lead and os.path.isfile(log.path):
        result["plot"] = plot_curves(log.path, os.path.join(cfg.workdir, "learning_curves.png"))
    return result


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if dataclasses.is_dataclass(d):
        return _jsonable(dataclasses.asdict(d))
    return d if isinstance(d, (int, float, str, bool, type(None))) else str(d)
