"""What compiled programs outside the layers take from the CPU fast path: loops, fixed weights, jit.

The layers reach the fast ops through ``jaxcnn.cpu.ops``; everything else (the train step, the
input-optimisation loops, the attacks) needs only this module:

* ``jit``: ``jax.jit`` whose compiled programs are keyed on the policy (``policy.key()``), so
  ``cpu.mode(...)`` or ``cpu.winograd_disabled()`` takes effect for the next call instead of
  silently reusing a program traced under the old policy.
* ``steps_per_call``, ``fori_loop``: XLA:CPU runs the body of a while loop several times slower
  than the same ops at top level, so on the CPU an
  optimisation loop runs one compiled step per call from Python (the state stays on the device)
  and short traced loops (the PGD inside adversarial training) are unrolled; elsewhere they
  stay one ``lax.scan`` / ``lax.fori_loop``.
* ``cond_tree``: a choice between two pytrees on one traced predicate (the train step's NaN
  guard). One ``lax.cond`` on the CPU: ``where(pred, a, b)`` per leaf lets XLA fuse the
  predicate's computation into every leaf's select, which made ResNet-50's step compile several
  times slower (``benchmarks/cpu/nan_guard.py``). Elsewhere the selects stay: XLA:GPU reads a
  conditional's predicate on the host, a synchronisation per step.
* ``fixed_weights``: variables with their kernels' Winograd transforms made once, for weights
  that stay fixed over many calls (``winograd.with_transforms``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.cpu import policy, winograd

MAX_UNROLL = 16


class _PolicyJit:
    """``jax.jit(fun, **options)`` once per CPU policy (see ``jit``)."""

    def __init__(self, fun, options):
        self._fun, self._options, self._by_policy = fun, options, {}
        functools.update_wrapper(self, fun)

    def _current(self):
        key = policy.key()
        compiled = self._by_policy.get(key)
        if compiled is None:
            # jax.jit's trace cache is keyed on the function object: a wrapper of its own per policy,
            # or a second policy would reuse the first one's trace
            fun = self._fun
            compiled = self._by_policy[key] = jax.jit(functools.wraps(fun)(lambda *a, **k: fun(*a, **k)),
                                                      **self._options)
        return compiled

    def __call__(self, *args, **kwargs):
        return self._current()(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._current().lower(*args, **kwargs)

    def _cache_size(self) -> int:
        """Programs compiled under the current policy (for tests that count compilations)."""
        return self._current()._cache_size()

    def __get__(self, obj, objtype=None):   # a method: bind like a function
        return self if obj is None else functools.partial(self, obj)


def jit(fun=None, **options):
    """``jax.jit`` keyed on the CPU policy: usable as ``jit(f, ...)``, ``@jit`` or
    ``@functools.partial(jit, static_argnames=...)``. The fast paths are chosen when a function is
    traced; with this, a switch of ``cpu.mode`` or Winograd retraces on the next call."""
    if fun is None:
        return functools.partial(jit, **options)
    return _PolicyJit(fun, options)


def steps_per_call(steps: int) -> int:
    """How many optimisation steps one compiled call should run: all of them, or one on the CPU."""
    return 1 if policy.fast_paths() else steps


def fori_loop(n: int, body, init):
    """``lax.fori_loop(0, n, body, init)``, unrolled on the CPU fast path when ``n <= MAX_UNROLL``."""
    if policy.fast_paths() and n <= MAX_UNROLL:
        x = init
        for i in range(n):
            x = body(i, x)
        return x
    return lax.fori_loop(0, n, body, init)


def cond_tree(pred, on_true, on_false):
    """``on_true()`` if ``pred`` else ``on_false()`` (two no-argument functions returning pytrees of the
    same structure): one ``lax.cond`` on the CPU fast path, ``where`` per leaf elsewhere."""
    if policy.fast_paths() and policy.enabled("cond_tree"):
        return lax.cond(pred, on_true, on_false)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true(), on_false())


def fixed_weights(variables, *, remember: bool = True):
    """``variables`` ready for many calls with the same weights: their float32 3x3 and 5x5 kernels'
    Winograd transforms made once (see ``winograd.with_transforms``); as they are off the fast path."""
    return winograd.with_transforms(variables, remember=remember)
