"""Batches for training and evaluation, built with grain.

Training: the example stream is ``MapDataset.source(source).seed(seed).shuffle().repeat()``
(reshuffled every epoch, random access), augmented per example with a
generator seeded by (seed, stream index). Global batch ``s`` is stream
examples ``[s * B, (s + 1) * B)``; process ``p`` of ``P`` gets the slice
``[p * B/P, (p + 1) * B/P)`` of it. Batches are random access, so the data
position of a run is just its step: a resumed run (or a run on a different
number of hosts) sees exactly the same global batches.

Evaluation: the source in order, in global batches padded at the end with a
``mask`` that is 0 on padding.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import grain
import numpy as np


def _stack(examples: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _threads() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def train_batches(source, *, global_batch: int, seed: int, augment: Callable | None = None, start_step: int = 0,
                  num_steps: int | None = None, process_index: int = 0, process_count: int = 1,
                  prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of global batches ``start_step, start_step + 1, ...``."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
    local = global_batch // process_count
    stream = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    if augment is not None:
        stream = stream.random_map(lambda ex, rng: augment(ex, rng))
    first = process_index * local

    def batch(step: int) -> dict[str, np.ndarray]:
        base = step * global_batch + first
        return _stack([stream[base + k] for k in range(local)])

    end = start_step + num_steps if num_steps is not None else 2 ** 40
    steps = grain.MapDataset.range(start_step, end).map(batch)
    options = grain.ReadOptions(num_threads=_threads(), prefetch_buffer_size=prefetch)
    return iter(steps.to_iter_dataset(options))


def eval_batches(source, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of each padded global batch of the whole source, in order."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
    local = global_batch // process_count
    n = len(source)
    num_batches = -(-n // global_batch)

    def batch(b: int) -> dict[str, np.ndarray]:
        idx = b * global_batch + process_index * local + np.arange(local)
        examples = [source[int(min(i, n - 1))] for i in idx]
        out = _stack(examples)
        out["mask"] = (idx < n).astype(np.float32)
        return out

    ds = grain.MapDataset.range(num_batches).map(batch)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=_threads(), prefetch_buffer_size=2)))
