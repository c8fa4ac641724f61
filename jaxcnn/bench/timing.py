"""Timing a block of steps: warm-up, then repeats, each blocking on its result; median and spread.

Standard library only: ``torch_side`` (run in a Python that may have no JAX) imports it too.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Timing:
    """The seconds of each timed run."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how far apart the runs were."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median > 0 else 0.0

    @property
    def ms(self) -> float:
        return 1e3 * self.median

    def as_dict(self) -> dict:
        return {"median_s": self.median, "best_s": self.best, "spread": self.spread, "runs_s": list(self.runs)}


STEP_TARGET_S = 0.5      # a timed block of steps lasts about this long when its steps are not given
MAX_STEPS = 50


def auto_steps(step: Callable[[], object], sync: Callable[[object], object], target_s: float = STEP_TARGET_S,
               max_steps: int = MAX_STEPS) -> int:
    """Steps per timed block so that one lasts about ``target_s``, from one timed call (1 to ``max_steps``)."""
    t = time.perf_counter()
    sync(step())
    return int(min(max_steps, max(1, round(target_s / max(time.perf_counter() - t, 1e-6)))))


def time_block(step: Callable[[], object], sync: Callable[[object], object], *, steps: int, repeats: int,
               warmup: int = 1) -> Timing:
    """``warmup`` untimed steps, then ``repeats`` timed blocks of ``steps`` calls of ``step``, each block ended
    by ``sync(last result)`` (which waits for the device). The runs are seconds per step."""
    if repeats < 1 or steps < 1:
        raise ValueError(f"repeats and steps must be at least 1, got {repeats} and {steps}")
    out = None
    for _ in range(warmup):
        out = step()
    sync(out)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        runs.append((time.perf_counter() - t) / steps)
    return Timing(tuple(runs))


def throughput(batch: int, timing: Timing) -> dict:
    """images/s (median, and the spread of the repeats) and ms/step of a ``Timing`` of steps of ``batch``."""
    return {"images_per_s": batch / timing.median, "spread": timing.spread, "ms_per_step": timing.ms,
            "runs_s": list(timing.runs)}
