"""When the CPU fast paths apply: the lowering mode and the Winograd switch.

The policy is read when a function is *traced*. ``jaxcnn.cpu.jit`` (used by every compiled
program of the package) keys its compiled programs on ``key()``, so a switch takes effect for
the next call of any of them; a user's own ``jax.jit`` keeps what it traced first.

``mode``:

  ``"auto"`` (default): the fast paths on the CPU backend, XLA's own ops elsewhere
    (GPU/TPU paths are untouched);
  ``"reference"``: XLA's own ops everywhere (e.g. for ``jax.jvp``, which the fast paths'
    custom VJPs do not support);
  ``"fast"``: the fast paths everywhere, oneDNN included on several devices (for testing them).

``JAXCNN_WINOGRAD=0`` or ``with winograd_disabled():`` keeps the direct convolutions where the
Winograd ones would run.
"""

from __future__ import annotations

import contextlib
import os

import jax

MODES = ("auto", "reference", "fast")
_mode = "auto"
_winograd = os.environ.get("JAXCNN_WINOGRAD", "1") != "0"


def get_mode() -> str:
    return _mode


def set_mode(mode: str) -> None:
    """Selects the lowering policy for what is traced afterwards (and for ``cpu.jit``'s next call)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"unknown lowering mode {mode!r}; valid: {', '.join(MODES)}")
    _mode = mode


@contextlib.contextmanager
def mode(m: str):
    """``with cpu.mode("reference"): ...`` traces with that policy, then restores the previous one."""
    previous = _mode
    set_mode(m)
    try:
        yield
    finally:
        set_mode(previous)


def winograd_enabled() -> bool:
    return _winograd


@contextlib.contextmanager
def winograd_disabled():
    """Traces with the direct convolutions only (for before/after measurements and tests)."""
    global _winograd
    previous, _winograd = _winograd, False
    try:
        yield
    finally:
        _winograd = previous


def key() -> tuple:
    """What a compiled program depends on: the mode and the Winograd switch."""
    return (_mode, _winograd)


def fast_paths() -> bool:
    """Whether the CPU fast paths apply to what is traced now."""
    return _mode == "fast" or (_mode == "auto" and jax.default_backend() == "cpu")


def onednn_convs() -> bool:
    """oneDNN convolutions (and the C++ pool, batch norm, dense layers): on the CPU fast path when the
    process sees one device.

    XLA's SPMD partitioner cannot split a custom call it knows nothing about, so in a
    computation sharded over several CPU devices (simulated, or one per process) it would
    run every oneDNN convolution on the whole batch on each device. There XLA's own
    convolutions stay; ``mode("fast")`` forces oneDNN (unsharded computations, tests).
    """
    return _mode == "fast" or (fast_paths() and jax.device_count() == 1)
