"""Model registry: name -> Flax module constructor plus what is known about it.

A leaf: each family module registers its variants here at import, and ``jaxcnn.models``
imports every family before it hands out ``create_model``, so the registry imports no model.

A variant is a table row (``functools.partial`` of its family's module with
the stage sizes / widths fixed); ``create_model`` adds the user's options
(``num_classes``, ``dtype``, ``param_dtype``, ``dropout_rate`` ...). Unknown
names and options fail with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model.

    name: registry name. family: module family (``resnet``, ``vgg`` ...).
    resolution: native input size (square). torchvision: name of the
    torchvision builder with the same architecture and state-dict keys, or
    None. task: ``classification`` or ``segmentation``.
    pretrained_options: options torchvision's pretrained checkpoints need
    (e.g. GoogLeNet's ``transform_input=True``), applied by ``load_pretrained``.
    """

    name: str
    family: str
    constructor: Callable[..., nn.Module]
    resolution: int = 224
    torchvision: str | None = None
    task: str = "classification"
    pretrained_options: tuple[tuple[str, Any], ...] = ()


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, constructor: Callable[..., nn.Module], *, family: str, resolution: int = 224,
             torchvision: str | None = None, task: str = "classification",
             pretrained_options: dict[str, Any] | None = None) -> None:
    """Adds a model to the registry (called at import time by each family module)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelInfo(name, family, constructor, resolution, torchvision, task,
                                tuple(sorted((pretrained_options or {}).items())))


def list_models(family: str | None = None, task: str | None = None) -> list[str]:
    """Sorted registry names, optionally filtered by family or task."""
    return sorted(n for n, i in _REGISTRY.items()
                  if (family is None or i.family == family) and (task is None or i.task == task))


def model_info(name: str) -> ModelInfo:
    """The ``ModelInfo`` of a registered model; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _module_class(constructor: Callable) -> type:
    while isinstance(constructor, functools.partial):
        constructor = constructor.func
    return constructor


def model_options(name: str) -> dict[str, Any]:
    """Options ``create_model`` accepts for ``name``, with their defaults."""
    info = model_info(name)
    fixed = info.constructor.keywords if isinstance(info.constructor, functools.partial) else {}
    out = {}
    for f in dataclasses.fields(_module_class(info.constructor)):
        if f.name in ("parent", "name") or f.name in fixed or not f.init:
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else None
    return out


def _coerce(name: str, key: str, value: Any) -> Any:
    if key in ("dtype", "param_dtype"):
        if isinstance(value, str):
            if value not in _DTYPES:
                raise ValueError(f"{name}: {key}={value!r} is not one of {', '.join(_DTYPES)}")
            return _DTYPES[value]
        return value
    if key == "num_classes" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name}: num_classes must be a positive integer, got {value!r}")
    if key.endswith("dropout_rate") and not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name}: {key} must be in [0, 1), got {value!r}")
    return value


def create_model(name: str, **options: Any) -> nn.Module:
    """Builds a registered model.

    Args:
      name: a name from ``list_models()``.
      **options: module fields, e.g. ``num_classes=10``, ``dtype="bfloat16"``,
        ``param_dtype``, ``dropout_rate``; ``model_options(name)`` lists them.

    Returns:
      A ``flax.linen.Module``; ``model.apply(variables, x, train=False)`` maps
      NHWC images (normalized with ``jaxcnn.preprocess``) to
      ``(logits, features)``.
    """
    info = model_info(name)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")
    return info.constructor(**{k: _coerce(name, k, v) for k, v in options.items()})
