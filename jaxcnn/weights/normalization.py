"""State dicts of models wrapped with their input normalization: RobustBench's and the robustness library's.

Robust ImageNet models are published as torchvision architectures behind a module that normalizes
pixel-space input in [0, 1], so their state dicts carry the wrapper's prefix and, sometimes, its
buffers. The layouts read here (``module.``, DataParallel's prefix, is removed by the reader first):

==========================================  ===========================================================
layout                                      keys
==========================================  ===========================================================
RobustBench (``normalize_model``:           ``model.<torchvision key>``, ``normalize.mean`` and
``Sequential(normalize=ImageNormalizer,     ``normalize.std`` (1, 3, 1, 1); the files of its model zoo
model=...)``)                               hold the ``model.`` keys only, and its ImageNet entries
                                            (Salman et al. 2020's R18/R50/WRN-50-2, Engstrom et al.
                                            2019's R50, Wong et al. 2020's R50) all state torchvision's
                                            ImageNet mean and std
the robustness library (``AttackerModel``:  ``model.<key>``, ``normalizer.new_mean`` and
Engstrom et al.'s and Salman et al.'s own   ``normalizer.new_std`` (3, 1, 1), and the attacker's copy
checkpoints, ``{"model": state dict,        of both, ``attacker.model.<key>`` and
"optimizer": ..., "epoch": ...}``)          ``attacker.normalize.new_mean``/``new_std`` (dropped)
==========================================  ===========================================================

The normalization is read from the buffers where the file has them; where it has none it is stated:
torchvision's ImageNet mean and std, which is what RobustBench's ImageNet model zoo declares for every
such model. jaxcnn's models take ``jaxcnn.preprocess``'s ImageNet-normalized input, so a model loaded
from such a file is wrapped in ``Renormalized``, which maps that input to the file's normalization
before the network: with pixels x, ``(x - mean) / std = z * (STD / std) + (MEAN - mean) / std`` for
``z = preprocess(x)``. Attacks, attributions and evaluation then see the model the file describes.
(The robustness library clamps its input to [0, 1] first; jaxcnn's input-optimisation methods keep
images in [0, 1] already.)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcnn.imagenet import MEAN, STD
from jaxcnn.layers import check_images

# (format, mean key, std key, prefix of a second copy of the weights to drop)
_LAYOUTS = (
    ("RobustBench", "normalize.mean", "normalize.std", None),
    ("robustness library", "normalizer.new_mean", "normalizer.new_std", "attacker."),
)
_PREFIX = "model."


class NormalizationWarning(UserWarning):
    """Says which input normalization a wrapped weight file's model uses, and where it came from."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The pixel-space normalization ``(x - mean) / std`` a wrapped model was trained with.

    ``format``: the wrapper's layout (``RobustBench``, ``robustness library``); ``source``: the keys
    the values were read from, or the statement they rest on when the file holds none.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    format: str
    source: str

    def describe(self) -> str:
        fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
        same = " (ImageNet's, as jaxcnn.preprocess)" if self.is_imagenet() else ""
        return f"{self.format} state dict; input normalization mean={fmt(self.mean)} std={fmt(self.std)}{same}, " \
               f"{self.source}"

    def is_imagenet(self) -> bool:
        return bool(np.allclose(self.mean, MEAN, rtol=0, atol=1e-6) and np.allclose(self.std, STD, rtol=0, atol=1e-6))


def _channels(value: np.ndarray, key: str, source: str) -> tuple[float, float, float]:
    v = np.asarray(value, np.float64)
    if v.size != 3:      # (3,), the robustness library's (3, 1, 1), RobustBench's (1, 3, 1, 1)
        raise ValueError(f"{source}: {key} has shape {tuple(v.shape)}; expected 3 values, one per colour channel")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{source}: {key} holds NaN or Inf")
    return tuple(float(x) for x in v.reshape(3))


def unwrap(state: dict[str, np.ndarray], source: str = "state dict") -> tuple[dict[str, np.ndarray],
                                                                              Normalization | None]:
    """``(state with the wrapper's prefix and buffers removed, its Normalization)``; ``(state, None)``
    for a state dict that is not wrapped (every key not under ``model.`` leaves it as it is).

    Raises a one-line ``ValueError`` for a mean without a std (or the reverse), a buffer that is not
    three finite values, or a standard deviation that is not positive.
    """
    if state and all(k.startswith("module.") for k in state):   # DataParallel's (the .pth reader removes it too)
        state = {k[len("module."):]: v for k, v in state.items()}
    for fmt, mean_key, std_key, copy in _LAYOUTS:
        if mean_key in state or std_key in state:
            break
    else:
        fmt, mean_key, std_key, copy = "RobustBench", None, None, None
    buffers = {mean_key, std_key} - {None}
    rest = [k for k in state if k not in buffers and not (copy and k.startswith(copy))]
    if not rest or not all(k.startswith(_PREFIX) for k in rest):
        if buffers & set(state):
            raise ValueError(f"{source}: has {' and '.join(sorted(buffers & set(state)))} but its weights are "
                             f"not under {_PREFIX!r}; not a {fmt} state dict")
        return state, None
    if mean_key is None:
        norm = Normalization(MEAN, STD, fmt, "stated: the file holds no normalization buffers, and RobustBench's "
                                            "ImageNet model zoo declares ImageNet's mean and std for these models")
    else:
        missing = [k for k in (mean_key, std_key) if k not in state]
        if missing:
            raise ValueError(f"{source}: has {mean_key if missing[0] == std_key else std_key} but not {missing[0]}")
        mean, std = _channels(state[mean_key], mean_key, source), _channels(state[std_key], std_key, source)
        if min(std) <= 0:
            raise ValueError(f"{source}: {std_key} must be positive, got {std}")
        norm = Normalization(mean, std, fmt, f"read from {mean_key} and {std_key}")
    out = {}
    for k in rest:
        name = k[len(_PREFIX):]
        name = name[len("module."):] if name.startswith("module.") else name
        out[name] = state[k]
    return out, norm


class Renormalized(nn.Module):
    """``inner`` fed the normalization it was trained with, from ``jaxcnn.preprocess``'s ImageNet-normalized
    input. Shares ``inner``'s variables (the same tree, no extra level) and returns what it returns.

    ``normalization`` says which (``Normalization``); ``__call__(x, train=False)`` as ``inner``.
    """

    inner: nn.Module
    normalization: Normalization

    def setup(self):
        nn.share_scope(self, self.inner)

    def __call__(self, x, train: bool = False):
        x = check_images(x, model=type(self.inner).__name__)
        if not self.normalization.is_imagenet():
            mean, std = np.asarray(self.normalization.mean), np.asarray(self.normalization.std)
            scale = (np.asarray(STD) / std).astype(np.float32)
            shift = ((np.asarray(MEAN) - mean) / std).astype(np.float32)
            x = (x.astype(jnp.float32) * scale + shift).astype(x.dtype)
        return self.inner(x, train=train)


def wrap(model: nn.Module, norm: Normalization | None, source: str) -> Any:
    """``model`` as is for an unwrapped file; ``Renormalized(model, norm)`` with a ``NormalizationWarning``
    naming the normalization otherwise."""
    if norm is None:
        return model
    warnings.warn(f"{source}: {norm.describe()}; the model takes jaxcnn.preprocess's input and converts it",
                  NormalizationWarning, stacklevel=3)
    return Renormalized(model, norm)
