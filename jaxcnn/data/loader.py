"""Batches for training and evaluation, built with grain, in threads or worker processes.

Training: the example stream is ``MapDataset.source(source).seed(seed).shuffle().repeat()``
(reshuffled every epoch, random access), augmented per example with a
generator seeded by (seed, stream index). Global batch ``s`` is stream
examples ``[s * B, (s + 1) * B)``; process ``p`` of ``P`` gets the slice
``[p * B/P, (p + 1) * B/P)`` of it. Batches are random access, so the data
position of a run is just its step: a resumed run (or a run on a different
number of hosts) sees exactly the same global batches.

Evaluation: the source in order, in global batches padded at the end with a
``mask`` that is 0 on padding.

Who does the work (``workers``): 0 runs the examples on ``threads`` threads of
this process (grain's prefetch; Pillow decodes and resizes without the GIL, the
Python in between holds it); N > 0 starts N worker processes (grain's
``mp_prefetch``: spawned, each builds every N-th batch, the batches come back
in order through shared memory), for hosts whose accelerators eat more
images than one process can decode. Every example is a function of (seed,
its stream index) alone, so the batches are bit-identical whatever the
threads or processes (``tests/test_loader_workers.py``), and a resumed run
reads what an uninterrupted one would. ``default_workers`` picks the count
for a machine; ``benchmarks/pipeline.py`` measures the rates.

When the transform reads encoded images (``jaxcnn.data.transforms.reads_encoded``)
and the source hands them out (``src.encoded(i)``: image folders, tfds sets),
the workers read the files' bytes and the transform decodes only what it needs.

An example that fails in a worker (an unreadable file, when the source was
built without checking its files) stops the iteration with a ValueError naming
it, raised in the consuming process.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import grain
import numpy as np

from jaxcnn.data.sources import reader


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _threads() -> int:
    return max(1, min(8, usable_cores()))


def default_workers(accelerator: bool) -> int:
    """Worker processes for a host: none on the CPU backend (the model's own work needs the cores; threads
    read the data) or with fewer than 4 cores; otherwise every core but two (the training process and the
    accelerator runtime), at most 32."""
    cores = usable_cores()
    if not accelerator or cores < 4:
        return 0
    return min(32, cores - 2)


def check_workers(workers: int, name: str = "data_workers") -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"{name} must be an int >= 0 (0: threads in this process), got {workers!r}")
    return workers


def resolve_workers(workers: int | None, name: str = "data_workers") -> int:
    """``workers`` checked (``name`` is the setting a bad value is reported as), else ``default_workers`` for
    the backend JAX runs on."""
    if workers is None:
        import jax
        return default_workers(accelerator=jax.default_backend() != "cpu")
    return check_workers(workers, name)


def _run(batches: grain.MapDataset, workers: int, threads: int | None, prefetch: int) -> Iterator:
    workers = check_workers(workers)
    if workers == 0:
        options = grain.ReadOptions(num_threads=threads or _threads(), prefetch_buffer_size=prefetch)
        return iter(batches.to_iter_dataset(options))
    from absl import flags
    if not flags.FLAGS.is_parsed():   # grain's process prefetch reads its absl flags (defaults are all we use)
        flags.FLAGS.mark_as_parsed()
    # in a worker: one thread builds its batches, the next one prefetched while the last is sent
    ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=threads or 1, prefetch_buffer_size=1))
    return iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                            per_worker_buffer_size=max(1, prefetch // workers))))


def train_batches(source, *, global_batch: int, seed: int, augment: Callable | None = None, start_step: int = 0,
                  num_steps: int | None = None, process_index: int = 0, process_count: int = 1,
                  prefetch: int = 4, workers: int = 0, threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of global batches ``start_step, start_step + 1, ...``; ``workers``
    processes (0: ``threads`` threads, default one per core up to 8) build them."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
    local = global_batch // process_count
    stream = grain.MapDataset.source(reader(source, augment)).seed(seed).shuffle().repeat()
    if augment is not None:
        stream = stream.random_map(lambda ex, rng: augment(ex, rng))
    first = process_index * local

    def example(j: int) -> dict:
        step, k = divmod(j, local)
        return stream[step * global_batch + first + k]

    end = start_step + num_steps if num_steps is not None else 2 ** 40
    batches = grain.MapDataset.range(start_step * local, end * local).map(example).batch(local)
    return _run(batches, workers, threads, prefetch)


def eval_batches(source, *, global_batch: int, process_index: int = 0, process_count: int = 1,
                 workers: int = 0, threads: int | None = None, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of each padded global batch of the whole source, in order. ``workers``,
    ``threads`` and ``prefetch``: who reads the examples and how many batches ahead, as for training (the module
    docstring)."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
    local = global_batch // process_count
    n = len(source)
    num_batches = -(-n // global_batch)

    def example(j: int) -> dict:
        b, k = divmod(j, local)
        i = b * global_batch + process_index * local + k
        return {**source[int(min(i, n - 1))], "mask": np.float32(i < n)}

    batches = grain.MapDataset.range(num_batches * local).map(example).batch(local)
    return _run(batches, workers, threads, prefetch)
