"""Task objects: what the training loop does differently for classification and segmentation.

A task gives the loop its data preparation, train and eval steps, training
augmentation, the summary of summed eval outputs and the metric the plateau
schedule watches (as ``1 - metric``), so ``jaxcnn.training.loop.train`` runs
one path for every task. The task is the model's (``model_info(name).task``);
``task_for`` maps it to its object.

==================  ==================================  ===================================
                    ``Classification``                  ``Segmentation``
==================  ==================================  ===================================
targets             the source's ``"label"`` (B,)       its per-pixel ``"mask"`` (H, W),
                                                        renamed ``"label"`` (``MaskAsLabel``)
steps               ``steps.make_train_step`` /         ``segmentation.make_seg_train_step``
                    ``make_eval_step``                  / ``make_seg_eval_step``
``shift`` policy    ``data.augment.make_augment``       ``segmentation.make_seg_augment``
                                                        (the same shift/flip on the mask)
summary             per-example means: loss, top-1,     loss, mIoU, pixel accuracy
                    top-5                               (``segmentation.summarize_eval``)
watched             ``top1``                            ``miou``
==================  ==================================  ===================================
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import optax

from jaxcnn.data.augment import make_augment
from jaxcnn.data.transforms import make_train_transform
from jaxcnn.training import segmentation as seg
from jaxcnn.training.config import TrainConfig
from jaxcnn.training.mixup import MixConfig, check_mix
from jaxcnn.training.steps import make_eval_step, make_train_step


class Task(Protocol):
    name: str
    target_key: str   # the source's key of the targets
    watched: str      # the eval metric the plateau schedule watches (as 1 - metric)

    def prepare(self, cfg: TrainConfig, train_src: Any, test_src: Any) -> tuple[Any, Any]:
        """Checks the config for this task; the sources as the steps read them (targets under ``"label"``)."""

    def train_step(self, net: Any, tx: optax.GradientTransformation, cfg: TrainConfig, axis_name: str | None,
                   source: Any) -> Callable:
        """``train_step(state, batch) -> (state, metrics)`` for a prepared ``source``."""

    def eval_step(self, net: Any, axis_name: str | None, source: Any) -> Callable:
        """``eval_step(variables, batch) -> sums`` (padding masked out)."""

    def augment(self, cfg: TrainConfig, source: Any) -> Callable:
        """The training transform ``(example, rng) -> example`` of ``cfg.augment``."""

    def summarize(self, totals: dict[str, np.ndarray]) -> dict[str, float]:
        """The eval step's sums over a data set -> the reported metrics."""


class Classification:
    """One class per image: cross-entropy, top-1 / top-5."""

    name = "classification"
    target_key = "label"
    watched = "top1"

    def prepare(self, cfg: TrainConfig, train_src: Any, test_src: Any) -> tuple[Any, Any]:
        check_mix(mix_config(cfg))
        return train_src, test_src

    def train_step(self, net, tx, cfg, axis_name, source) -> Callable:
        return make_train_step(net, tx, label_smoothing=cfg.label_smoothing, accum_steps=cfg.accum_steps,
                               axis_name=axis_name, adversarial=cfg.adversarial, mix=mix_config(cfg),
                               num_classes=source.num_classes)

    def eval_step(self, net, axis_name, source) -> Callable:
        return make_eval_step(net, axis_name=axis_name)

    def augment(self, cfg: TrainConfig, source: Any) -> Callable:
        if cfg.augment == "shift":
            return make_augment(flip=cfg.augment_flip, max_shift=cfg.augment_shift, **cfg.augment_options)
        return make_train_transform(cfg.augment, cfg.image_size, **cfg.augment_options)

    def summarize(self, totals: dict[str, np.ndarray]) -> dict[str, float]:
        totals = dict(totals)
        n = max(float(totals.pop("count")), 1.0)
        return {k: float(v) / n for k, v in totals.items()}


class Segmentation:
    """A class per pixel: per-pixel cross-entropy with an ignore label, mIoU and pixel accuracy."""

    name = "segmentation"
    target_key = "mask"
    watched = "miou"

    def prepare(self, cfg: TrainConfig, train_src: Any, test_src: Any) -> tuple[Any, Any]:
        # per-pixel targets travel as "label" (the eval loader's "mask" is padding)
        if cfg.adversarial:
            raise ValueError("adversarial training is for classification models, not segmentation")
        if mix_config(cfg).enabled:
            raise ValueError("mixup/cutmix are for classification models, not segmentation")
        return seg.mask_as_label(train_src), seg.mask_as_label(test_src)

    @staticmethod
    def ignore_label(source: Any) -> int:
        return getattr(source, "ignore_label", seg.IGNORE_LABEL)

    def train_step(self, net, tx, cfg, axis_name, source) -> Callable:
        return seg.make_seg_train_step(net, tx, accum_steps=cfg.accum_steps, axis_name=axis_name,
                                       ignore_label=self.ignore_label(source))

    def eval_step(self, net, axis_name, source) -> Callable:
        return seg.make_seg_eval_step(net, axis_name=axis_name, ignore_label=self.ignore_label(source))

    def augment(self, cfg: TrainConfig, source: Any) -> Callable:
        ignore = self.ignore_label(source)
        if cfg.augment == "shift":
            return seg.make_seg_augment(flip=cfg.augment_flip, max_shift=cfg.augment_shift, ignore_label=ignore)
        extra = {"ignore_label": ignore} if cfg.augment == "segmentation" else {}
        return make_train_transform(cfg.augment, cfg.image_size, **{**extra, **cfg.augment_options})

    def summarize(self, totals: dict[str, np.ndarray]) -> dict[str, float]:
        return seg.summarize_eval(totals)


def mix_config(cfg: TrainConfig) -> MixConfig:
    """The run's mixup / cutmix options (``mixup_alpha``, ``cutmix_alpha``, ``mix_switch_prob``, ``mix_prob``)."""
    return MixConfig(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, switch_prob=cfg.mix_switch_prob,
                     prob=cfg.mix_prob)


TASKS: dict[str, Task] = {"classification": Classification(), "segmentation": Segmentation()}


def task_for(name: str) -> Task:
    """The task object of a model's task (``model_info(model).task``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]
