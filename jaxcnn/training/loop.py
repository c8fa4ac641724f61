"""The training loop: data -> jitted step -> periodic actions (log, eval, checkpoint), resumable.

Everything inside a step is one compiled program; logging, evaluation,
checkpointing and the progress bar happen between steps on the host. The
data position is the step (``jaxcnn.data.loader``), the dropout key is
derived from the step, and checkpoints hold the whole state, so a run killed
at any moment and restarted ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import numpy as np

from jaxcnn.data.augment import make_augment
from jaxcnn.data.loader import eval_batches, train_batches
from jaxcnn.data.sources import get_source
from jaxcnn.parallel.data_parallel import PMAP_AXIS, DataParallel
from jaxcnn.registry import create_model, model_options
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.config import TrainConfig, to_dict
from jaxcnn.training.metrics_log import MetricsLog, plot_curves
from jaxcnn.training.optimizer import PlateauControl, make_optimizer, plateau_factor
from jaxcnn.training.state import create_train_state
from jaxcnn.training.steps import make_eval_step, make_train_step


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step and the last good checkpoint."""


def build_model(cfg: TrainConfig, num_classes: int):
    options = dict(cfg.model_options, num_classes=num_classes, dtype=cfg.dtype)
    if cfg.strategy == "pmap" and "bn_axis_name" in model_options(cfg.model):
        options["bn_axis_name"] = PMAP_AXIS
    return create_model(cfg.model, **options)


def evaluate(dp: DataParallel, eval_step, variables, source, global_batch: int) -> dict[str, float]:
    """Loss, top-1 and top-5 over a whole source (padding masked out)."""
    totals: dict[str, float] = {}
    for batch in eval_batches(source, global_batch=global_batch, process_index=jax.process_index(),
                              process_count=jax.process_count()):
        sums = jax.device_get(eval_step(variables, dp.put_batch(batch)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    n = max(totals.pop("count"), 1.0)
    return {k: v / n for k, v in totals.items()}


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the configured training; returns final metrics and output paths."""
    train_src = get_source(cfg.dataset, "train", size=cfg.image_size)
    test_src = get_source(cfg.dataset, "test", size=cfg.image_size)
    model = build_model(cfg, train_src.num_classes)
    dp = DataParallel(cfg.strategy)
    dp.check_batch_size(cfg.batch_size)
    dp.check_batch_size(cfg.eval_batch_size)
    if cfg.batch_size % cfg.accum_steps or (cfg.batch_size // cfg.accum_steps) % dp.num_devices:
        raise ValueError(f"batch {cfg.batch_size} does not split into {cfg.accum_steps} micro-batches "
                         f"divisible over {dp.num_devices} devices")
    steps_per_epoch = len(train_src) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch {cfg.batch_size} is larger than the training set ({len(train_src)})")
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    tx = make_optimizer(cfg.optimizer, steps_per_epoch, math.ceil(cfg.epochs * steps_per_epoch))
    variables = None
    if cfg.pretrained:
        from jaxcnn.weights.torchvision import load_pretrained
        _, variables = load_pretrained(cfg.model, cfg.pretrained, **dict(cfg.model_options))
    state = create_train_state(model, tx, train_src.image_shape, seed=cfg.seed, variables=variables)

    lead = jax.process_index() == 0
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

    train_step = dp.compile_train_step(make_train_step(
        model, tx, label_smoothing=cfg.label_smoothing, accum_steps=cfg.accum_steps,
        axis_name=PMAP_AXIS if cfg.strategy == "pmap" else None, adversarial=cfg.adversarial))
    eval_step = dp.compile_eval_step(make_eval_step(model, axis_name=PMAP_AXIS if cfg.strategy == "pmap" else None))
    log = MetricsLog(cfg.workdir, enabled=lead)
    meta_base = {"model": cfg.model, "config": _jsonable(to_dict(cfg))}

    def save(step: int, force: bool = False) -> None:
        ckpt.save(step, dp.unreplicate(state), {**meta_base, "step": step, "plateau": plateau.state_dict()},
                  force=force)

    batches = train_batches(train_src, global_batch=cfg.batch_size, seed=cfg.seed,
                            augment=make_augment(flip=cfg.augment_flip, max_shift=cfg.augment_shift),
                            start_step=start, num_steps=total_steps - start, process_index=jax.process_index(),
                            process_count=jax.process_count())
    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True)
    pending, window, t_window, eval_metrics = None, [], time.perf_counter(), {}

    def check(step_metrics, step: int) -> None:
        host = jax.device_get(step_metrics)
        if host["finite"] < 1:
            ckpt.wait()
            last = ckpt.latest_step()
            raise TrainingDiverged(f"loss or gradients became NaN/Inf at step {step + 1}; training stopped, "
                                   f"last good checkpoint: step {last} in {ckpt.directory}")
        window.append(host)

    try:
        for step in range(start, total_steps):
            state, metrics = train_step(state, dp.put_batch(next(batches)))
            if pending is not None:  # look at the previous step's metrics while this one runs
                check(*pending)
            pending = (metrics, step)
            done = step + 1
            if done % cfg.log_every_steps == 0 or done == total_steps:
                check(*pending)
                pending = None
                now = time.perf_counter()
                rate = len(window) * cfg.batch_size / max(now - t_window, 1e-9)
                mean = {k: float(np.mean([w[k] for w in window])) for k in ("loss", "top1", "top5")}
                lr = plateau_factor(dp.unreplicate(state).opt_state)
                log.write(done, **{f"train/{k}": v for k, v in mean.items()}, images_per_s=rate, lr_factor=lr)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean['loss']:.3f}", img_s=f"{rate:.0f}")
                window, t_window = [], time.perf_counter()
            if bar is not None:
                bar.update(1)
            if done % steps_per_epoch == 0 or done == total_steps:
                eval_metrics = evaluate(dp, eval_step, dp.unreplicate(state).variables if cfg.strategy == "jit"
                                        else state.variables, test_src, cfg.eval_batch_size)
                log.write(done, **{f"eval/{k}": v for k, v in eval_metrics.items()})
                if cfg.optimizer.schedule == "plateau":
                    host = dp.unreplicate(state)
                    new_opt = plateau.update(1.0 - eval_metrics["top1"], host.opt_state)
                    if new_opt is not host.opt_state:  # the learning rate was divided: re-place the state
                        state = dp.put_state(host.replace(opt_state=new_opt))
            save(done, force=done == total_steps)
        if pending is not None:
            check(*pending)
    finally:
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
