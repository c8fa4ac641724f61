"""JAX's persistent compilation cache, on for the ``jaxcnn`` command and the benchmarks.

Compiling a whole train step of an ImageNet model is a large part of a short run on XLA:CPU. A
run that is resumed after being killed, a second run of the same recipe, or a benchmark run
again compiles the same programs; with JAX's persistent cache (``jax_compilation_cache_dir``)
they are read back from disk instead (``python -m benchmarks.train_step --compile-cache DIR``,
run twice, measures a train step's compile time with the cache cold, then warm). The key is the
program, the jax/jaxlib version, the backend and its flags, so a stale entry is never used.

The cache lives in ``~/.cache/jaxcnn/xla`` (``JAXCNN_CACHE`` moves the parent, as for the
oneDNN shim); ``JAXCNN_COMPILE_CACHE=0`` turns it off, ``JAXCNN_COMPILE_CACHE=DIR`` puts it
in DIR. A plain ``import jaxcnn`` leaves JAX's configuration alone.
"""

from __future__ import annotations

import os
import pathlib

_enabled: str | None = None


def cache_dir() -> pathlib.Path | None:
    """Where the cache goes, or None when ``JAXCNN_COMPILE_CACHE=0``."""
    setting = os.environ.get("JAXCNN_COMPILE_CACHE", "1")
    if setting == "0":
        return None
    if setting != "1":
        return pathlib.Path(setting)
    return pathlib.Path(os.environ.get("JAXCNN_CACHE", pathlib.Path.home() / ".cache" / "jaxcnn")) / "xla"


def enable() -> str | None:
    """Turns the persistent cache on (programs that took over a second to compile); returns its directory."""
    global _enabled
    path = cache_dir()
    if path is None or _enabled:
        return _enabled
    import jax

    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    _enabled = str(path)
    return _enabled
