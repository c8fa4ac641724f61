"""Evaluating checkpoints: the run's evaluation view or AlexNet's 10-crop, single models and ensembles.

``evaluate_runs(workdirs)`` restores the latest checkpoint of each run (its
config travels in the checkpoint), computes class probabilities on the run's
test split, and reports top-1/top-5 of every member and of the ensemble
(probabilities averaged over members), each with a line saying which views
of the images were scored (``eval_views``).

``ten_crop=True`` averages each model's probabilities over the four corner
crops, the center crop and their horizontal reflections (Krizhevsky et al.
2012, sec. 4.1), following the run's training augmentation: crops of the
training size from the image padded by the run's translation range (the
``shift`` policy) or from the central square of the image resized as the
policy resizes it (the cropping policies); mirror images only when the run
trained with flips, otherwise the five crops alone, since a model that never
saw mirrored inputs (digits) is scored on views it was not trained for.
Read-only: a workdir without checkpoints is a one-line error and nothing is
created.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from jaxcnn import cpu
from jaxcnn.data.sources import get_source
from jaxcnn.data.transforms import Transform, center_crop, compose, make_eval_transform, policy_flips, resize_shorter
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.optimizer import OptimizerConfig, make_optimizer
from jaxcnn.training.state import create_train_state
from jaxcnn.training.steps import model_input


def ten_crops(images: np.ndarray, size: int, mirror: bool = True) -> np.ndarray:
    """(B, H, W, C) -> (10, B, size, size, C): 4 corners, center, and their mirror images; with
    ``mirror=False`` (5, B, size, size, C), the five crops alone."""
    h, w = images.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"ten_crops: images {h}x{w} are smaller than the crop {size}")
    tops = [0, 0, h - size, h - size, (h - size) // 2]
    lefts = [0, w - size, 0, w - size, (w - size) // 2]
    crops = [images[:, t:t + size, left:left + size] for t, left in zip(tops, lefts)]
    return np.stack(crops + ([c[:, :, ::-1] for c in crops] if mirror else []))


def run_flips(cfg: TrainConfig) -> bool:
    """Whether the run's training transform mirrored images."""
    if cfg.augment == "shift":
        return bool(cfg.augment_flip)
    return policy_flips(cfg.augment, **cfg.augment_options)


@dataclasses.dataclass(frozen=True)
class Views:
    """How a run's test images are scored: ``base`` makes each example the array the views are cut from
    (None: the source's images as they are), padded by ``pad`` pixels; ``crops`` = "five" (4 corners and
    center of ``crop`` px) or "one" (the whole array), plus their mirror images when ``mirror``."""

    base: Transform | None
    pad: int
    crop: int
    crops: str
    mirror: bool
    description: str

    @property
    def count(self) -> int:
        return (5 if self.crops == "five" else 1) * (2 if self.mirror else 1)

    def of(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, C) -> (count, B, crop, crop, C)."""
        if self.pad:
            images = np.pad(images, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        if self.crops == "five":
            return ten_crops(images, self.crop, mirror=self.mirror)
        return np.stack([images, images[:, :, ::-1]] if self.mirror else [images])


_EVAL_WORDS = {"none": "whole images", "center": "center crop", "pad": "whole images, padded"}


def eval_views(cfg: TrainConfig, ten_crop: bool = False) -> Views:
    """The views of ``evaluate_runs`` for the run ``cfg``; ``description`` says in words what they are."""
    size = cfg.image_size
    if not ten_crop:
        base = None if cfg.eval_transform == "none" else make_eval_transform(size, cfg.eval_transform)
        return Views(base, 0, size, "one", False, _EVAL_WORDS.get(cfg.eval_transform, cfg.eval_transform))
    mirror = run_flips(cfg)
    mirrored = (", and their mirror images" if mirror
                else " (no mirror images: the run trained without flips)")
    if cfg.augment == "shift":   # fixed-size images, trained on translations by up to augment_shift
        s = int(cfg.augment_shift)
        if s == 0:
            return Views(None, 0, size, "one", mirror,
                         ("the whole image and its mirror image" if mirror else
                          "the whole image (no mirror image: the run trained without flips)")
                         + "; the run trained without shifts, so there is nothing to crop")
        return Views(None, s, size, "five", mirror,
                     f"{10 if mirror else 5} crops: 4 corners and center of the image padded by {s} px{mirrored}")
    opts = cfg.augment_options
    square = int(opts.get("resize") or opts.get("min_size") or round(size * 256 / 224))
    return Views(compose(resize_shorter(square), center_crop(square)), 0, size, "five", mirror,
                 f"{10 if mirror else 5} crops of {size} px: 4 corners and center of the central {square} px "
                 f"square{mirrored}")


def _config_from_meta(meta: dict) -> TrainConfig:
    raw = dict(meta["config"])
    raw["optimizer"] = OptimizerConfig(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in raw["optimizer"].items()})
    return TrainConfig(**raw)


def run_config(workdir: str) -> TrainConfig:
    """The config of the run in ``workdir``, as its latest checkpoint stores it (strategy ``jit``: one device
    layout that every command can use)."""
    ckpt = Checkpointer.open_existing(workdir)
    try:
        meta = ckpt.read_meta()
    finally:
        ckpt.close()
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
    ckpt = Checkpointer.open_existing(workdir)
    try:
        state, _ = ckpt.restore(target)
    finally:
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


def _scored_chunks(src, views: Views, chunk: int = 1024):
    """(images, labels) of the test source in chunks: the source's arrays when the views take them as they
    are, else ``views.base`` applied to each example (deterministic policies; the rng is unused)."""
    if views.base is None and hasattr(src, "images"):
        yield src.images, np.asarray(src.labels)
        return
    base = views.base or (lambda example, rng: example)
    rng = np.random.default_rng(0)
    for i in range(0, len(src), chunk):
        examples = [base(src[j], rng) for j in range(i, min(i + chunk, len(src)))]
        yield np.stack([e["image"] for e in examples]), np.array([int(e["label"]) for e in examples])


def evaluate_runs(workdirs: list[str], *, ten_crop: bool = False) -> dict[str, dict]:
    """Top-1/top-5 of each run and (for several) of their ensemble, on the test split; each run's entry
    also holds ``views``, the words of ``eval_views`` for what was scored."""
    results, all_probs, labels = {}, [], None
    for wd in workdirs:
        cfg, model, variables = restore_run(wd)
        views = eval_views(cfg, ten_crop)
        probs_wd, labels_wd = [], []
        for images, chunk_labels in _scored_chunks(run_source(cfg, "test"), views):
            probs_wd.append(np.mean([predict_probs(model, variables, np.ascontiguousarray(v))
                                     for v in views.of(images)], axis=0))
            labels_wd.append(chunk_labels)
        probs, labels_wd = np.concatenate(probs_wd), np.concatenate(labels_wd)
        if labels is not None and not np.array_equal(labels, labels_wd):
            raise ValueError(f"{wd} was trained on a different test set; an ensemble needs the same data")
        labels = labels_wd
        results[wd] = {**_accuracy(probs, labels), "views": views.description}
        all_probs.append(probs)
    if len(workdirs) > 1:
        results["ensemble"] = _accuracy(np.mean(all_probs, axis=0), labels)
    return results
