"""Deterministic synthetic weights and inputs, identical with or without PyTorch.

The parity references in ``tests/data/parity`` were made by running
torchvision's models on weights generated here (``make_refs.py``, in a venv
with torch); the test suite regenerates the same weights with NumPy alone,
converts them with ``jaxcnn.load_pretrained`` and compares. Only NumPy is
imported so that both sides share this file.
"""

from __future__ import annotations

import zlib

import numpy as np

SEED = 20261123
SAMPLE_POINTS = 1024


def _rng(*parts: str | int) -> np.random.Generator:
    return np.random.default_rng([SEED] + [zlib.crc32(str(p).encode()) for p in parts])


def synthetic_state_dict(shapes: dict[str, tuple[int, ...]], model: str) -> dict[str, np.ndarray]:
    """Weights for every key: He-scaled kernels, BN statistics in a sane range."""
    out = {}
    for key, shape in shapes.items():
        rng = _rng(model, key)
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = np.zeros(shape, np.int64)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif key.endswith("running_mean"):
            out[key] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        elif key.endswith("weight") and len(shape) == 1:
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith("bias"):
            out[key] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return out


def synthetic_images(model: str, size: int, batch: int = 2) -> np.ndarray:
    """A normalized NCHW batch (torch layout); transpose to NHWC for jaxcnn."""
    return _rng(model, "input", size).standard_normal((batch, 3, size, size)).astype(np.float32)


def sample(model: str, key: str, values: np.ndarray) -> np.ndarray:
    """Up to SAMPLE_POINTS entries of ``values`` at fixed positions (keeps reference files small)."""
    flat = np.asarray(values, np.float32).reshape(-1)
    if flat.size <= SAMPLE_POINTS:
        return flat
    idx = np.sort(_rng(model, "sample", key, flat.size).choice(flat.size, SAMPLE_POINTS, replace=False))
    return flat[idx]


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|: the error measure of the parity checks."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12))
