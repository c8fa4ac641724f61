"""The device's peak FLOP/s, measured: a large square matrix product in the run's dtype.

The figure MFU is taken against. It is measured rather than read off a datasheet because what a
model can reach is what the device's own matrix unit reaches through the libraries the run uses
(clock limits, a shared host, emulated bfloat16 on a CPU without it). The peak is the fastest of the
products a run can use: XLA's dot with the dtype's own output, XLA's dot accumulating into float32,
and the product jaxcnn's dense layers use (``jaxcnn.layers.matmul``: oneDNN on the CPU fast path,
which reaches AMX where XLA's bfloat16 dot does not). Timing only XLA's dot would let a model whose
convolutions run on oneDNN report an MFU above 1. One measurement per (backend, device kind, dtype, jax
version) is cached in ``peak_flops.json`` under jaxcnn's cache directory (``$JAXCNN_CACHE``, else
``~/.cache/jaxcnn``, as for the compilation cache).

On the CPU the simulated or real devices share the same cores, so the peak is the host's, once; on
accelerators it is one device's, times the devices a run uses. On a CPU without native bfloat16
(AVX512-BF16 or AMX) XLA's bfloat16 product is emulated, and bfloat16 is measured against the
float32 peak (``peak_dtype`` says which).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp

from jaxcnn import cpu
from jaxcnn.bench.machine import bf16_native
from jaxcnn.layers import matmul

CACHE_FILE = "peak_flops.json"
SIZE = {"cpu": 2048}      # the product's side; 8192 elsewhere (a few ms per product on a GPU)


def cache_dir() -> str:
    return os.environ.get("JAXCNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxcnn")


def peak_dtype(dtype: str, backend: str | None = None) -> str:
    """The dtype whose product the peak of a ``dtype`` run is measured with (float32 for emulated bfloat16)."""
    backend = backend or jax.default_backend()
    return "float32" if backend == "cpu" and dtype == "bfloat16" and not bf16_native() else dtype


PRODUCTS = {
    "xla": cpu.jit(lambda a, b: a @ b),
    "xla, float32 accumulation": cpu.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)),
    "dense layers' product": cpu.jit(matmul),
}


def measure(dtype: str, device=None, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``PRODUCTS``, each the best of ``repeats`` ``size`` x ``size`` products on
    ``device`` (default: the first one)."""
    device = device or jax.devices()[0]
    n = size or SIZE.get(device.platform, 8192)
    key = jax.random.key(0)
    a = jax.device_put(jax.random.normal(key, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32).astype(dtype), device)
    best = float("inf")
    for name, product in PRODUCTS.items():
        if name == "xla, float32 accumulation" and dtype == "float32":   # the same program as "xla"
            continue
        product(a, b).block_until_ready()
        for _ in range(repeats):
            t = time.perf_counter()
            product(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def _key(device, dtype: str) -> str:
    return f"{device.platform}|{device.device_kind}|{dtype}|jax {jax.__version__}|fastest of {', '.join(PRODUCTS)}"


def peak_flops(dtype: str, *, use_cache: bool = True, device=None) -> dict:
    """``{"flop_s", "dtype", "device_kind", "cached"}``: one device's measured peak for a ``dtype`` run
    (``peak_dtype``), from the cache when it holds this device kind."""
    device = device or jax.devices()[0]
    measured_dtype = peak_dtype(dtype, device.platform)
    key = _key(device, measured_dtype)
    path = os.path.join(cache_dir(), CACHE_FILE)
    cache = {}
    if use_cache and os.path.isfile(path):
        try:
            with open(path) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            cache = {}
    if use_cache and isinstance(cache.get(key), (int, float)) and cache[key] > 0:
        return {"flop_s": float(cache[key]), "dtype": measured_dtype, "device_kind": device.device_kind,
                "cached": True}
    flop_s = measure(measured_dtype, device)
    if use_cache:
        cache[key] = flop_s
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(cache, f, indent=1)
            os.replace(tmp, path)
        except OSError:   # an unwritable cache costs a measurement next time, nothing else
            pass
    return {"flop_s": flop_s, "dtype": measured_dtype, "device_kind": device.device_kind, "cached": False}


def run_peak(dtype: str, devices: list, **kwargs) -> dict:
    """The peak of a run over ``devices``: one device's times their number on accelerators, the host's once
    on the CPU (its devices share the cores)."""
    one = peak_flops(dtype, device=devices[0], **kwargs)
    scale = 1 if devices[0].platform == "cpu" else len(devices)
    return {**one, "flop_s": one["flop_s"] * scale, "per_device_flop_s": one["flop_s"], "devices": len(devices)}
