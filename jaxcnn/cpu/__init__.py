"""The CPU fast path: oneDNN, Winograd and C++ kernels where XLA:CPU's own ops are slow.

What each fast path replaces, when it applies and the benchmark behind it: ``README.md`` in
this folder. The switch is ``mode`` (``"auto"``, ``"reference"``, ``"fast"``) and
``winograd_disabled``; ``jit`` compiles a function once per policy, so a switch takes effect
for the next call. The layers reach the ops through ``jaxcnn.cpu.ops``; compiled loops take
``jit``, ``steps_per_call``, ``fori_loop``, ``cond_tree`` and ``fixed_weights`` from
``jaxcnn.cpu.loops``.
"""

from jaxcnn.cpu.loops import cond_tree, fixed_weights, fori_loop, jit, steps_per_call
from jaxcnn.cpu.policy import MODES, fast_paths, get_mode, mode, set_mode, winograd_disabled, winograd_enabled

__all__ = ["MODES", "cond_tree", "fast_paths", "fixed_weights", "fori_loop", "get_mode", "jit", "mode",
           "set_mode", "steps_per_call", "winograd_disabled", "winograd_enabled"]
