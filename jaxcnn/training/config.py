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
import collections.abc
import dataclasses
import importlib.util
import os
import types
import typing
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
    eval_options: dict = dataclasses.field(default_factory=dict)   # its options, e.g. {"resize": 232}
    eval_image_size: int | None = None    # the evaluation crop, when it differs from image_size (train at 176,
                                          # evaluate at 224: torchvision's current recipes); needs eval_transform
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
    # weight EMA (jaxcnn.training.steps.with_ema): decay per update (0 = off), an update every ema_every steps,
    # warm-up "none" or "tf" (decay min(d, (1 + n) / (10 + n)) after n updates)
    ema_decay: float = 0.0
    ema_every: int = 1
    ema_warmup: str = "none"
    # mixup / cutmix inside the train step (jaxcnn.training.mixup), timm's names: alphas of Beta(a, a) (0 = off),
    # the chance of cutmix when both are on, the chance a batch is mixed at all
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_switch_prob: float = 0.5
    mix_prob: float = 1.0
    prefetch_batches: int = 2             # device batches transferred ahead of the running step
    data_workers: int | None = None       # data loader processes; 0: threads in the training process; None:
                                          # jaxcnn.data.loader.default_workers (0 on the CPU backend, else the
                                          # cores but two); the batches are the same whatever the count
    profile_steps: str | None = None      # "START:STOP": a jax.profiler trace of those steps in workdir/profile

    def with_overrides(self, overrides: list[str]) -> "TrainConfig":
        """Applies ``key=value`` strings (``optimizer.learning_rate=0.05``).

        A value is a Python literal (``3``, ``0.5``, ``None``, ``{'a': 1}``); a string field also takes
        unquoted text (``dataset=digits``) and a bool field ``true``/``false``. Unknown keys list the
        valid ones; a value of the wrong type names the field, the type it takes and what was given.
        """
        cfg = self
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            cfg = _replace_path(cfg, key.strip().split("."), raw.strip())
        return cfg


def eval_size(cfg: TrainConfig) -> int:
    """The size a run is evaluated at: ``eval_image_size``, else ``image_size``."""
    return cfg.eval_image_size or cfg.image_size


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw


def type_name(hint: Any) -> str:
    """``int``, ``float``, ``str | None``, ``Sequence[float]`` ...: a field's type as the overrides see it."""
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return str(hint).replace("typing.", "")


def _typed(key: str, hint: Any, raw: str) -> Any:
    """``raw`` as a value of type ``hint``, or a one-line ``ValueError`` naming ``key``."""
    value = _literal(raw)

    def fits(h: Any) -> tuple[bool, Any]:
        origin = typing.get_origin(h)
        if h is Any:
            return True, value
        if h is type(None):
            return value is None, None
        if origin in (typing.Union, types.UnionType):
            for a in typing.get_args(h):
                ok, v = fits(a)
                if ok:
                    return True, v
            return False, None
        if h is bool:
            if isinstance(value, bool):
                return True, value
            return (raw.lower() in ("true", "false")), raw.lower() == "true"
        if h is int:
            return isinstance(value, int) and not isinstance(value, bool), value
        if h is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool), value
        if h is str:
            return value is not None, value if isinstance(value, str) else raw
        if h is dict or origin is dict:
            return isinstance(value, dict), value
        if origin in (collections.abc.Sequence, tuple, list):
            (elem, *_) = typing.get_args(h) or (Any,)
            if not isinstance(value, (list, tuple)):
                return False, None
            for v in value:
                if not _fits_scalar(elem, v):
                    return False, None
            return True, tuple(value)
        return isinstance(value, h) if isinstance(h, type) else True, value

    ok, out = fits(hint)
    if not ok:
        raise ValueError(f"config field {key} takes {type_name(hint)}, got {raw!r}")
    return out


def _fits_scalar(hint: Any, v: Any) -> bool:
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return hint is Any or not isinstance(hint, type) or isinstance(v, hint)


def _replace_path(obj: Any, path: list[str], raw: str, prefix: str = "") -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    if path[0] not in names:
        raise ValueError(f"unknown config field {path[0]!r}; valid: {', '.join(names)}")
    hint = typing.get_type_hints(type(obj))[path[0]]
    key, here = prefix + ".".join(path), prefix + path[0]
    child = getattr(obj, path[0])
    if len(path) == 1:
        if dataclasses.is_dataclass(child):
            fields = ", ".join(f"{here}.{f.name}" for f in dataclasses.fields(child))
            raise ValueError(f"config field {key} is a group; set its fields: {fields}")
        return dataclasses.replace(obj, **{path[0]: _typed(key, hint, raw)})
    if isinstance(child, dict):
        return dataclasses.replace(obj, **{path[0]: {**child, ".".join(path[1:]): _literal(raw)}})
    if not dataclasses.is_dataclass(child):
        raise ValueError(f"config field {here} is a {type_name(hint)}; it has no field {path[1]!r}")
    return dataclasses.replace(obj, **{path[0]: _replace_path(child, path[1:], raw, here + ".")})


def override_fields(cfg: Any = None, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(key, type, value) of every field an override can set, nested groups as ``optimizer.learning_rate``;
    values from ``cfg`` (default: the default run)."""
    cfg = TrainConfig() if cfg is None else cfg
    hints = typing.get_type_hints(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += override_fields(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", type_name(hints[f.name]), value))
    return rows


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
