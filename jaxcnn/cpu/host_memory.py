"""Keep freed host memory in the process, so XLA:CPU's per-call buffers do not fault in fresh pages.

XLA:CPU allocates the temporary buffer of a compiled call (gigabytes for a ResNet-50
train step) with ``malloc`` on every call and frees it afterwards. glibc serves such
large blocks with ``mmap`` and returns them with ``munmap``, so every step touches
brand-new pages: hundreds of thousands of minor page faults per step. With one malloc
arena, no ``mmap`` for large blocks and no trimming of the heap, the freed block is
reused by the next call without a single fault (``python -m benchmarks.train_step``
prints the page faults per step, and ``--no-keep-heap`` measures without). The price: the process keeps its peak
heap instead of returning it to the system, which a training or benchmark process
wants anyway.

One malloc arena also makes XLA's multi-threaded compilation contend for its lock, so
compiling gets slower. So this is a choice for
long runs: the ``jaxcnn`` command line and the benchmarks apply it at start (before
XLA starts its threads; an arena a thread already holds is kept), a library import
applies it only with ``JAXCNN_KEEP_HEAP=1``, and ``JAXCNN_KEEP_HEAP=0`` turns it off
everywhere. It does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8   # glibc's mallopt parameters
applied = False


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to one arena, no mmap'd blocks and no trimming; returns whether it did."""
    global applied
    if applied or os.environ.get("JAXCNN_KEEP_HEAP") == "0":
        return applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # a trim threshold of -1 becomes SIZE_MAX inside glibc: never give the heap top back
    applied = all(mallopt(p, v) == 1 for p, v in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
    return applied
