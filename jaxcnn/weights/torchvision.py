"""torchvision state dict -> Flax variables, for every model with a torchvision twin.

Flax modules in jaxcnn are named after torchvision's module paths, so the key
of every Flax leaf is computed, not looked up:

=======================================  ==================================
Flax leaf                                torch key (transform)
=======================================  ==================================
params/<path>/kernel (4-D)               <path>.weight (OIHW -> HWIO)
params/<path>/kernel (2-D)               <path>.weight (transposed)
params/<path>/scale                      <path>.weight (BatchNorm)
params/<path>/bias                       <path>.bias
batch_stats/<path>/mean, var             <path>.running_mean, running_var
=======================================  ==================================

with ``<path>`` the Flax module names joined by ``.``. A family whose
torchvision checkpoints use older key spellings registers a renaming function
in ``KEY_FIXES`` (DenseNet's ``norm.1`` -> ``norm1``). Every missing,
unexpected or mis-shaped key is reported by name. ``inception_v1``'s fix maps BVLC's
Caffe blob names (``jaxcnn.weights.bvlc_googlenet``) onto its keys.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcnn.models import create_model, model_info
from jaxcnn.weights import bvlc_googlenet
from jaxcnn.weights.normalization import unwrap, wrap
from jaxcnn.weights.state_dict_io import read_state_dict

_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _densenet_key(key: str) -> str:
    # torchvision's published DenseNet checkpoints predate the current layer names
    return re.sub(r"(denselayer\d+)\.(norm|relu|conv)\.(\d)\.", r"\1.\2\3.", key)


KEY_FIXES: dict[str, Callable[[str], str]] = {"densenet": _densenet_key, "inception_v1": bvlc_googlenet.to_jaxcnn_key}


def _torch_key(collection: str, path: tuple[str, ...]) -> tuple[str, str]:
    """(torch key, kind) for one Flax leaf."""
    prefix, leaf = ".".join(path[:-1]), path[-1]
    if collection == "params":
        name = {"kernel": "weight", "scale": "weight", "bias": "bias"}.get(leaf)
    elif collection == "batch_stats":
        name = {"mean": "running_mean", "var": "running_var"}.get(leaf)
    else:
        name = None
    if name is None:
        raise ValueError(f"no torch equivalent for Flax variable {collection}/{'/'.join(path)}")
    return f"{prefix}.{name}", leaf


def _to_flax(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if kind == "kernel" and value.ndim == 2:
        return value.T
    return value


def _to_torch(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "kernel" and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if kind == "kernel" and value.ndim == 2:
        return value.T
    return value


def variable_shapes(model, resolution: int) -> dict:
    """Shapes of ``model``'s variables (no allocation), initialised at ``resolution``."""
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def convert_state_dict(state: dict[str, np.ndarray], model, *, family: str, resolution: int = 224,
                       source: str = "state dict") -> dict[str, Any]:
    """Maps a torchvision state dict onto ``model``'s Flax variables.

    Args:
      state: ``{torch key: array}``.
      model: the Flax module the weights are for.
      family: registry family (selects ``KEY_FIXES``).
      resolution: an input size at which ``model.init`` works.
      source: name for error messages (e.g. the file path).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` of NumPy arrays in ``param_dtype``.

    Raises:
      ValueError naming every missing, unexpected or mis-shaped key.
    """
    fix = KEY_FIXES.get(family, lambda k: k)
    state = {fix(k): v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    shapes = variable_shapes(model, resolution)
    flat = traverse_util.flatten_dict(shapes)
    out, missing, mismatched, used = {}, [], [], set()
    for (collection, *path), spec in flat.items():
        key, kind = _torch_key(collection, tuple(path))
        if key not in state:
            missing.append(key)
            continue
        value = _to_flax(kind, np.asarray(state[key]))
        if value.shape != tuple(spec.shape):
            torch_shape = tuple(state[key].shape)
            mismatched.append(f"{key} {torch_shape} (expected {tuple(_to_torch(kind, np.zeros(spec.shape)).shape)})")
            used.add(key)
            continue
        used.add(key)
        out[(collection, *path)] = value.astype(spec.dtype)
    unexpected = sorted(set(state) - used - set(missing))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:4])}{' ...' if len(mismatched) > 4 else ''}")
    if problems:
        raise ValueError(f"{source} does not fit {family} model: " + " | ".join(problems))
    return traverse_util.unflatten_dict(out)


def to_torch_state_dict(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """The inverse map: Flax variables -> torchvision state dict (for export and round trips)."""
    out = {}
    for (collection, *path), value in traverse_util.flatten_dict(variables).items():
        if collection not in ("params", "batch_stats"):
            continue
        key, kind = _torch_key(collection, tuple(path))
        out[key] = _to_torch(kind, np.asarray(value))
    return out


def load_pretrained(name: str, path: str | os.PathLike, **options: Any):
    """Loads torchvision weights (or jaxcnn's export of any model's weights) for a registered model.

    Args:
      name: registry name. Models with a torchvision twin read torchvision's
        files; every model reads the files ``to_torch_state_dict`` writes
        (module paths are the keys).
      path: ``.safetensors``, ``.npz`` or ``.pth`` state dict (read without unpickling code), or an
        ``.onnx`` model (its layer parameters; BVLC's GoogLeNet for ``inception_v1``).
      **options: model options; those torchvision's checkpoints need
        (e.g. GoogLeNet's ``transform_input=True``) are set unless given.

    Files of models wrapped with their input normalization (RobustBench's and the robustness
    library's robust ImageNet models: a ``model.`` prefix, normalization buffers) are read too
    (``jaxcnn.weights.normalization``): the model returned is then a ``Renormalized`` one that takes
    ``jaxcnn.preprocess``'s input like every other and converts it to the file's normalization, and a
    ``NormalizationWarning`` says which normalization that is and whether the file stored it.

    Returns:
      ``(model, variables)`` ready for ``model.apply(variables, x, train=False)``.
    """
    info = model_info(name)
    opts = {**dict(info.pretrained_options), **options}
    model = create_model(name, **opts)
    source = os.fspath(path)
    state, norm = unwrap(read_state_dict(path), source)
    variables = convert_state_dict(state, model, family=info.family, resolution=info.resolution, source=source)
    return wrap(model, norm, source), variables
