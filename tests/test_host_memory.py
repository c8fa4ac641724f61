"""``host_memory``: with the heap kept, a compiled call's large temporary buffer stops faulting in fresh pages.

Each case runs in a fresh interpreter: the setting must precede XLA's threads, and the rest of the
suite keeps glibc's defaults.
"""

import os
import subprocess
import sys

SCRIPT = """
import resource, sys
from jaxcnn import host_memory
applied = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
a = jnp.ones((4096, 4096), jnp.float32)
f = jax.jit(lambda a: (a @ a) @ a)          # a @ a: a 64 MB temporary XLA allocates on every call
for _ in range(3):
    f(a).block_until_ready()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(a).block_until_ready()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(keep: str):
    env = dict(os.environ, JAXCNN_KEEP_HEAP=keep, XLA_FLAGS="")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_kept_heap_reuses_the_temporary_buffer():
    applied, faults = _faults("1")
    assert applied and faults < 2000                  # 64 MB is 16,384 pages: none of them fresh
    applied, faults = _faults("0")
    assert not applied and faults > 8000              # glibc's default: mmap'd, unmapped, faulted in again
