"""What a benchmark result records about where it ran: the CPU, its cores and flags, the accelerator, the versions.

Standard library only at import: ``benchmarks/harness.py`` loads this file by path in a PyTorch worker's
Python, which has no JAX (``versions`` imports JAX when called).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

# the CPU flags that decide which fast paths and dtypes run natively
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags") and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def bf16_native() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16); without it XLA's and PyTorch's
    bfloat16 products are emulated, many times slower than float32."""
    return bool(cpu_flags() & BF16_FLAGS)


def machine() -> dict:
    """CPU model, cores (all, and those this process may use), the flags of ``FLAGS``, OS and Python."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "usable_cores": usable, "flags": [f for f in FLAGS if f in flags],
            "bf16_native": bool(flags & BF16_FLAGS), "system": platform.platform(),
            "python": platform.python_version()}


def package_versions(names=PACKAGES) -> dict:
    """The installed versions of ``names`` (None for a package that is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions() -> dict:
    """jax, jaxlib, flax, optax and numpy versions, JAX's backend, device kind and device count."""
    import jax

    devices = jax.devices()
    return {**package_versions(), "jax": jax.__version__, "backend": jax.default_backend(),
            "device": devices[0].device_kind, "devices": len(devices)}


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\b\d+-core\b", " ", text, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def machine_tag(device: str | None = None) -> str:
    """A result file's machine part: the CPU model and core count (``amd-epyc-2c``), and the accelerator's kind
    when the run used one (``device``, e.g. JAX's ``device_kind``)."""
    m = machine()
    tag = f"{_slug(m['cpu'])}-{m['cores']}c"
    if device and not device.lower().startswith("cpu"):
        tag += "-" + _slug(device)
    return tag
