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
Winograd ones would run. ``with disabled(*names):`` turns single parts of the fast path off (see
``SWITCHES``), so that a benchmark measures one of them inside a whole model or loop.
"""

from __future__ import annotations

import contextlib
import os

import jax

MODES = ("auto", "reference", "fast")
_mode = "auto"
_winograd = os.environ.get("JAXCNN_WINOGRAD", "1") != "0"
_disabled: frozenset[str] = frozenset()

# The parts of the fast path ``disabled`` turns off one by one, each with what runs in its place and
# the benchmark that compares the two.
SWITCHES = {
    "max_pool": "the strided-slice VJP instead of the C++ max pool (benchmarks.cpu.pool_layers)",
    "batch_norm": "flax's batch-norm formula in XLA instead of the C++ kernel (benchmarks.cpu.batch_norm_layers)",
    "bias_add": "the plain bfloat16 bias gradient instead of the float32 sum (benchmarks.cpu.bias_grad)",
    "gram": "XLA's dot for style losses' Gram matrices instead of oneDNN's (benchmarks.cpu.gram)",
    "cond_tree": "where per leaf instead of one lax.cond in cond_tree (benchmarks.cpu.nan_guard)",
    "winograd_5x5": "the direct convolution for 5x5 kernels, Winograd for 3x3 only (benchmarks.cpu.winograd)",
    "fixed_weights": "no Winograd kernel transforms made beforehand for fixed weights (benchmarks.cpu.winograd)",
}


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


@contextlib.contextmanager
def disabled(*names: str):
    """``with disabled("batch_norm"):`` traces with those parts of the fast path off (``SWITCHES``: what
    runs instead), everything else as it is, then restores the previous set: for measurements."""
    global _disabled
    unknown = [n for n in names if n not in SWITCHES]
    if unknown:
        raise ValueError(f"unknown fast-path switch {unknown[0]!r}; valid: {', '.join(SWITCHES)}")
    previous, _disabled = _disabled, _disabled | frozenset(names)
    try:
        yield
    finally:
        _disabled = previous


def enabled(name: str) -> bool:
    """Whether the part ``name`` of ``SWITCHES`` is on (it still applies only where the fast path does)."""
    return name not in _disabled


def key() -> tuple:
    """What a compiled program depends on: the mode, the Winograd switch and the parts switched off."""
    return (_mode, _winograd, _disabled)


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
