"""Builds the C++ kernels of the CPU fast path (``csrc/``) and registers them with XLA.

One shared object holds every handler: oneDNN's convolutions and matrix products
(``onednn_conv.cc``, ``onednn_matmul.cc``), the max pool (``max_pool.cc``), the training-mode
batch norm (``batch_norm.cc``) and the Winograd convolutions (``winograd.cc``). It is compiled on
first use with ``g++``, the headers and library of the ``onednn-devel-cpu-gomp`` /
``onednn-cpu-gomp`` wheels and jaxlib's FFI headers, and cached under ``~/.cache/jaxcnn``
(``JAXCNN_CACHE`` moves it) per source, flags, jax version and CPU (``-march=native``).
Where it cannot be built (no compiler, not x86-64 Linux, ``JAXCNN_ONEDNN=0``) ``available()``
is false, one warning says why, and every op stays on XLA's own lowering.
"""


from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp

_SOURCES = [pathlib.Path(__file__).parent / "csrc" / f for f in ("onednn_conv.cc", "onednn_matmul.cc",
                                                                      "max_pool.cc", "batch_norm.cc", "winograd.cc")]
_TARGETS = {"jaxcnn_conv_forward": "JaxcnnConvForward", "jaxcnn_conv_backward_data": "JaxcnnConvBackwardData",
            "jaxcnn_conv_backward_weights": "JaxcnnConvBackwardWeights",
            "jaxcnn_matmul": "JaxcnnMatMul",                              # onednn_matmul.cc
            "jaxcnn_max_pool_forward": "JaxcnnMaxPoolForward",          # max_pool.cc, see ops.max_pool
            "jaxcnn_max_pool_forward_train": "JaxcnnMaxPoolForwardTrain",
            "jaxcnn_max_pool_backward": "JaxcnnMaxPoolBackward",
            "jaxcnn_batch_norm_forward": "JaxcnnBatchNormForward",      # batch_norm.cc, see ops.batch_norm
            "jaxcnn_batch_norm_backward": "JaxcnnBatchNormBackward",
            "jaxcnn_winograd_conv": "JaxcnnWinogradConv",                 # winograd.cc, see winograd.py
            "jaxcnn_winograd_conv_transformed": "JaxcnnWinogradConvTransformed",
            "jaxcnn_winograd_kernel": "JaxcnnWinogradKernel"}
_why_not: str | None = None


def _wheel_dir(dist: str, suffix: str) -> pathlib.Path:
    """The directory holding the file of ``dist`` whose path ends with ``suffix``."""
    files = importlib.metadata.distribution(dist).files or ()
    for f in files:
        if str(f).endswith(suffix):
            return pathlib.Path(f.locate()).resolve().parent
    raise FileNotFoundError(f"{dist} has no {suffix}")


def _cpu_flags() -> bytes:
    try:
        return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").encode()
    except OSError:
        return b""


def _build() -> pathlib.Path:
    include = _wheel_dir("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp").parent.parent
    lib = _wheel_dir("onednn-cpu-gomp", "libdnnl.so.3")
    flags = ["-O3", "-march=native", "-w", "-std=c++17", "-fopenmp", "-shared", "-fPIC", f"-I{include}",
             f"-I{jax.ffi.include_dir()}", f"-L{lib}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib}"]
    tag = hashlib.sha256(b"".join(f.read_bytes() for f in (*_SOURCES, _SOURCES[0].with_name("shim.h")))
                         + " ".join(flags).encode()
                         + jax.__version__.encode() + _cpu_flags()).hexdigest()[:16]   # -march=native: per CPU
    cache = pathlib.Path(os.environ.get("JAXCNN_CACHE", pathlib.Path.home() / ".cache" / "jaxcnn"))
    out = cache / f"onednn_conv-{tag}.so"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:   # build aside, then rename: safe across processes
        part = pathlib.Path(tmp) / out.name
        cmd = [os.environ.get("CXX", "g++"), *map(str, _SOURCES), "-o", str(part), *flags]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            errors = [line for line in run.stderr.splitlines() if "error" in line] or run.stderr.splitlines()
            raise RuntimeError(f"building {out.name} failed: {errors[0].strip() if errors else run.returncode}")
        os.replace(part, out)
    return out


@functools.cache
def _library() -> ctypes.CDLL | None:
    global _why_not
    if os.environ.get("JAXCNN_ONEDNN", "1") == "0":
        _why_not = "disabled by JAXCNN_ONEDNN=0"
        return None
    # OpenMP threads that sleep when idle instead of spinning, so that an idle team leaves the
    # cores to XLA's threads (small train steps run faster; large ones are unchanged). Read
    # when libgomp loads, so it only holds where no OpenMP runtime was loaded before.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        lib = ctypes.CDLL(str(_build()))
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
        return lib
    except (OSError, RuntimeError, FileNotFoundError, importlib.metadata.PackageNotFoundError) as err:
        _why_not = f"{type(err).__name__}: {err}"
        warnings.warn(f"jaxcnn: oneDNN convolutions unavailable, using XLA's ({_why_not})", stacklevel=3)
        return None


def available() -> bool:
    """Whether the oneDNN convolutions can be used here (builds them on the first call)."""
    return _library() is not None


def why_unavailable() -> str | None:
    _library()
    return _why_not


@functools.cache
def _bf16() -> bool:
    lib = _library()
    return lib is not None and bool(lib.JaxcnnBf16Supported())


def dtype_supported(dtype) -> bool:
    """Whether oneDNN's convolutions and matrix products take ``dtype`` on this CPU: float32
    always; bfloat16 where oneDNN builds those primitives (3.2: from AVX-512 on; on an AVX2-only
    CPU, such as AMD's Zen 3, XLA's bfloat16 ops stay)."""
    return dtype == jnp.float32 or (dtype == jnp.bfloat16 and _bf16())
