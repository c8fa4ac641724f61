"""Several hosts (processes): ``jax.distributed.initialize`` with CPU collectives over gloo.

Call before any other JAX work. After it, ``jax.devices()`` lists the devices
of every process and ``DataParallel`` spans them all; each process feeds its
own slice of the global batch.
"""

from __future__ import annotations

import jax


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process run (``coordinator`` is ``host:port`` of process 0)."""
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in [0, {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only runs; GPUs/TPUs ignore it
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
