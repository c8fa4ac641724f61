"""Evaluating checkpoints: center crop or AlexNet's 10-crop, single models and ensembles.

``evaluate_runs(workdirs)`` restores the latest checkpoint of each run (its
config travels in the checkpoint), computes class probabilities on the run's
test split, and reports top-1/top-5 of every member and of the ensemble
(probabilities averaged over members). ``ten_crop=True`` averages each
model's probabilities over the four corner crops, the center crop and their
horizontal reflections (Krizhevsky et al. 2012, sec. 4.1), taken from the
image padded by the run's translation range, so crops have the training size.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cpu
from jaxcnn.data.sources import get_source
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.optimizer import OptimizerConfig, make_optimizer
from jaxcnn.training.state import create_train_state
from jaxcnn.training.steps import model_input


def ten_crops(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, C) -> (10, B, size, size, C): 4 corners, center, and their mirror images."""
    h, w = images.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"ten_crops: images {h}x{w} are smaller than the crop {size}")
    tops = [0, 0, h - size, h - size, (h - size) // 2]
    lefts = [0, w - size, 0, w - size, (w - size) // 2]
    crops = [images[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)]
    return np.stack(crops + [c[:, :, ::-1] for c in crops])


def _config_from_meta(meta: dict) -> TrainConfig:
    raw = dict(meta["config"])
    raw["optimizer"] = OptimizerConfig(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in raw["optimizer"].items()})
    return TrainConfig(**raw)


def run_config(workdir: str) -> TrainConfig:
    """The config of the run in ``workdir``, as its latest checkpoint stores it (strategy ``jit``: one device
    layout that every command can use)."""
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1)
    meta = ckpt.read_meta()
    ckpt.close()
    if meta is None:
        raise ValueError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    return dataclasses.replace(_config_from_meta(meta), strategy="jit")


def run_source(cfg: TrainConfig, split: str):
    """``split`` of the run's data set with the run's data settings (data dir, image size)."""
    return get_source(cfg.dataset, split, size=cfg.image_size, **({"data_dir": cfg.data_dir} if cfg.data_dir else {}))


def restore_run(workdir: str):
    """(config, model, variables) of the latest checkpoint in ``workdir``: the run's model with its options,
    built for the run's data set's classes."""
    from jaxcnn.training.loop import build_model
    cfg = run_config(workdir)
    src = run_source(cfg, "test")
    model = build_model(cfg, src.num_classes)
    image_shape = getattr(src, "image_shape", None) or (cfg.image_size, cfg.image_size, 3)
    target = create_train_state(model, make_optimizer(cfg.optimizer, 1, 1), tuple(image_shape), seed=cfg.seed)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1)
    state, _ = ckpt.restore(target)
    ckpt.close()
    return cfg, model, state.variables


@functools.partial(cpu.jit, static_argnums=0)
def _probs(model, variables, images):
    return jax.nn.softmax(model.apply(variables, model_input(images), train=False)[0])


def predict_probs(model, variables, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images (N, H, W, C), in batches of ``batch``.

    One compiled forward per (model, batch shape): the last batch is padded to the full size, and
    the ten crops of ``evaluate_runs`` and every run of a model reuse it.
    """
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        n = len(chunk)
        if n < batch and len(images) > batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(_probs(model, variables, chunk))[:n])
    return np.concatenate(out)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return {"top1": float(np.mean(top5[:, 0] == labels)), "top5": float(np.mean(np.any(top5 == labels[:, None], 1)))}


def evaluate_runs(workdirs: list[str], *, ten_crop: bool = False) -> dict[str, dict[str, float]]:
    """Top-1/top-5 of each run and (for several) of their ensemble, on the test split."""
    results, all_probs, labels = {}, [], None
    for wd in workdirs:
        cfg, model, variables = restore_run(wd)
        src = get_source(cfg.dataset, "test", size=cfg.image_size)
        images, labels_wd = src.images, src.labels
        if labels is not None and not np.array_equal(labels, labels_wd):
            raise ValueError(f"{wd} was trained on a different test set; an ensemble needs the same data")
        labels = labels_wd
        if ten_crop:
            s = max(cfg.augment_shift, 1)
            padded = np.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))
            probs = np.mean([predict_probs(model, variables, np.ascontiguousarray(c))
                             for c in ten_crops(padded, cfg.image_size)], axis=0)
        else:
            probs = predict_probs(model, variables, images)
        results[wd] = _accuracy(probs, labels)
        all_probs.append(probs)
    if len(workdirs) > 1:
        results["ensemble"] = _accuracy(np.mean(all_probs, axis=0), labels)
    return results
