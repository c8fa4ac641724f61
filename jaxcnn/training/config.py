"""Run configuration: one dataclass, Python recipes under ``train/``, ``key=value`` overrides.

The task (classification or segmentation) is the model's, from the registry
(``jaxcnn.model_info(model).task``); a segmentation run reads
per-pixel masks from its data set and reports mean IoU and pixel accuracy.

The defaults ARE the embedded default run (``jaxcnn train`` with no
arguments): ResNet-18 on scikit-learn's handwritten digits at 32 px, which
needs no download.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Any

from jaxcnn.training.optimizer import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "resnet18"
    model_options: dict = dataclasses.field(default_factory=dict)
    dataset: str = "digits"
    data_dir: str | None = None           # where prepared data sets live (tfds data_dir)
    image_size: int = 32
    batch_size: int = 64                  # global, over all devices and hosts
    eval_batch_size: int = 128
    epochs: float = 8
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=0.02, momentum=0.9, weight_decay=5e-4,
                                                 schedule="cosine", warmup_epochs=1)
    label_smoothing: float = 0.0
    accum_steps: int = 1                  # gradient accumulation: micro-batches per step
    dtype: str = "float32"                # compute dtype; params stay float32
    strategy: str = "jit"                 # "jit" (mesh sharding), "pmap"; alexnet_twotower: "towers" /
                                          # "towers_jit" (towers on a 2-wide "model" mesh axis)
    seed: int = 0
    augment: str = "shift"                # training transform policy: shift (+augment_flip/shift below),
                                          # inception, alexnet, vgg_scale, segmentation (jaxcnn.data.transforms)
    augment_options: dict = dataclasses.field(default_factory=dict)   # the policy's options (e.g. lighting_std)
    eval_transform: str = "none"          # none (fixed-size data), center (resize + center crop), pad (segmentation)
    augment_flip: bool = False            # shift policy: horizontal reflections (off for digits)
    augment_shift: int = 2                # shift policy: random translation, pixels
    workdir: str = "runs/digits_resnet18"
    checkpoint_every_steps: int = 50
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    max_steps: int | None = None          # stop early (tests, smoke runs)
    pretrained: str | None = None         # torchvision weights to start from
    backbone_weights: str | None = None   # segmentation: a classification checkpoint of the FCN's backbone
    adversarial: dict = dataclasses.field(default_factory=dict)  # PGD training: {"eps": 0.03, "steps": 3}

    def with_overrides(self, overrides: list[str]) -> "TrainConfig":
        """Applies ``key=value`` strings (``optimizer.learning_rate=0.05``); unknown keys list the valid ones."""
        cfg = self
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            cfg = _replace_path(cfg, key.strip().split("."), value)
        return cfg


def _replace_path(obj: Any, path: list[str], value: Any) -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    if path[0] not in names:
        raise ValueError(f"unknown config field {path[0]!r}; valid: {', '.join(names)}")
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    child = getattr(obj, path[0])
    if isinstance(child, dict):
        return dataclasses.replace(obj, **{path[0]: {**child, path[1]: value}})
    return dataclasses.replace(obj, **{path[0]: _replace_path(child, path[1:], value)})


def load_config(path: str | None) -> TrainConfig:
    """The ``config()`` of a recipe file (``train/*.py``), or the default run when ``path`` is None."""
    if path is None:
        return TrainConfig()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location("jaxcnn_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "config"):
        raise ValueError(f"{path} defines no config() function")
    return module.config()


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
