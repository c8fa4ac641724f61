"""Data parallelism over every device of every host: ``jit`` over a mesh, or ``pmap``.

``DataParallel("jit")`` (the default): a 1-D ``("data",)`` mesh over
``jax.devices()``; the state is replicated (``NamedSharding(mesh, P())``),
the batch is split along ``"data"`` and the step is one ``jax.jit`` with
those shardings and the state donated. Batch-norm statistics are computed
over the global batch (XLA inserts the all-reduce). The same code runs on one
CPU, eight GPUs, a TPU pod or several hosts.

``DataParallel("pmap")``: the classic per-device program; the model must be
built with ``bn_axis_name=PMAP_AXIS`` so batch norm is cross-replica, and the
step averages gradients with ``lax.pmean`` (``make_train_step(axis_name=PMAP_AXIS)``).
It computes the same numbers as ``"jit"``.

On several hosts each process passes its own slice of the global batch
(``global_batch / jax.process_count()`` examples) to ``put_batch``.

``DataParallel`` follows the placement protocol (``jaxcnn.parallel.placement``).
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

STRATEGIES = ("jit", "pmap")
PMAP_AXIS = "batch"


def prefetch_to_device(batches, put, size: int = 2):
    """``put(batch)`` for each host batch, ``size`` batches ahead of the consumer."""
    queue = collections.deque()
    for batch in batches:
        queue.append(put(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


class DataParallel:
    """Places state and batches on devices and compiles steps for one strategy (a ``placement.Placement``)."""

    def __init__(self, strategy: str = "jit", devices: list | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown parallel strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self.devices = list(devices if devices is not None else jax.devices())
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        # pmap's per-device arrays: a leading axis of length len(local_devices), one slice per device
        self._stacked = NamedSharding(Mesh(np.array(self.local_devices), ("data",)), P("data"))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def data_size(self) -> int:
        """Ways the batch is split: every device."""
        return len(self.devices)

    @property
    def axis_name(self) -> str | None:
        """The axis the steps average over: pmap's; None under jit, where the sharded batch is global."""
        return PMAP_AXIS if self.strategy == "pmap" else None

    def step_model(self, model):
        """The model itself: data parallelism does not change the forward."""
        return model

    def check_batch_size(self, global_batch: int) -> None:
        """A global batch must split evenly over devices (and hosts): one-line error otherwise."""
        if global_batch % self.num_devices:
            raise ValueError(f"global batch {global_batch} does not divide over {self.num_devices} devices; "
                             f"use a multiple of {self.num_devices}")

    # ------------------------------------------------------------------ state
    def put_state(self, state: Any) -> Any:
        """Host (or any) state -> device state (replicated)."""
        if self.strategy == "pmap":  # one copy per local device along a new leading axis
            n = len(self.local_devices)
            return jax.tree_util.tree_map(
                lambda a: jax.device_put(jnp.broadcast_to(a, (n, *jnp.shape(a))), self._stacked), state)
        return jax.device_put(state, self.replicated)

    def unreplicate(self, state: Any) -> Any:
        """One logical copy of the state (what checkpoints hold), still on device."""
        if self.strategy == "pmap":
            return jax.tree_util.tree_map(lambda a: a[0], state)
        return state

    def host_state(self, state: Any) -> Any:
        """Device state -> one copy as NumPy arrays (for checkpoints and comparisons)."""
        if self.strategy == "pmap":
            state = jax.tree_util.tree_map(lambda a: a[0], state)
        return jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), state)

    # ------------------------------------------------------------------ batches
    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of the global batch -> device arrays."""
        if self.strategy == "pmap":
            n = len(self.local_devices)
            return jax.tree_util.tree_map(
                lambda a: jax.device_put(np.asarray(a).reshape(n, a.shape[0] // n, *a.shape[1:]), self._stacked),
                local_batch)
        return jax.tree_util.tree_map(
            lambda a: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(a)), local_batch)

    def prefetch(self, batches, size: int = 2):
        """Yields device batches ``size`` ahead: the next batches are transferred while a step runs."""
        return prefetch_to_device(batches, self.put_batch, size)

    # ------------------------------------------------------------------ steps
    def compile_train_step(self, step_fn: Callable, state: Any = None) -> Callable:
        """``step_fn(state, batch) -> (state, metrics)`` compiled once, state donated.

        ``state`` (the protocol's tree of the state) is not needed: every leaf is replicated.
        """
        if self.strategy == "pmap":
            # metrics are pmean-ed, hence equal on every device: returned once (out_axes None)
            return jax.pmap(step_fn, axis_name=PMAP_AXIS, donate_argnums=0, devices=self.local_devices,
                            out_axes=(0, None))
        return jax.jit(step_fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=(self.replicated, self.replicated), donate_argnums=0)

    def compile_eval_step(self, eval_fn: Callable, state: Any = None) -> Callable:
        """``eval_fn(variables, batch) -> sums`` compiled once (``state``: as in ``compile_train_step``)."""
        if self.strategy == "pmap":
            return jax.pmap(eval_fn, axis_name=PMAP_AXIS, devices=self.local_devices, out_axes=None)
        return jax.jit(eval_fn, in_shardings=(self.replicated, self.batch_sharding), out_shardings=self.replicated)
