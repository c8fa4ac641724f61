"""Several compiled calls timed against each other: one warm call each, then ``repeats`` rounds in
which every call runs once, so that the machine's drift (this VM's +-20%) hits all of them alike."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable


def interleaved_ms(calls: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, float]:
    """The median milliseconds of each no-argument call, blocking on its result."""
    import jax

    for f in calls.values():
        jax.block_until_ready(f())
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
