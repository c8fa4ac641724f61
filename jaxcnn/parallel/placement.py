"""The placement protocol: how a strategy puts the state and the batches on devices and compiles the steps.

The training loop sees only this interface, so it runs the same code for
every strategy (``STRATEGIES``):

==============  ==========================================================================
``jit``         ``DataParallel("jit")``: state replicated over a ``("data",)`` mesh of every
                device of every host, the batch split along ``"data"``
``pmap``        ``DataParallel("pmap")``: the same numbers with ``jax.pmap`` (cross-replica
                batch norm through ``model_options``)
``towers``      ``TowerParallel(layout="shard_map")``: the two-tower AlexNet, one tower per
                device of a ``("data", "model")`` mesh, the model's own exchanges
``towers_jit``  ``TowerParallel(layout="jit")``: the same shardings, XLA's collectives
==============  ==========================================================================

A step factory (``jaxcnn.training.steps``, ``jaxcnn.training.tasks``) takes
``placement.step_model(model)`` for its model and ``placement.axis_name`` for
the axis it averages over; ``compile_train_step(fn, state)`` /
``compile_eval_step(fn, state)`` compile the pure functions it returns with
the placement's shardings (``state``: any value with the state's tree, e.g.
the initial state, which fixes each leaf's sharding where the layout needs it).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import flax.linen as nn
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxcnn.parallel.data_parallel import PMAP_AXIS, STRATEGIES as DATA_STRATEGIES, DataParallel
from jaxcnn.parallel.model_parallel import LAYOUTS, TowerParallel, tower_mesh

# strategy -> the two-tower layout it names
TOWER_STRATEGIES = {"towers": LAYOUTS[0], "towers_jit": LAYOUTS[1]}
STRATEGIES = (*DATA_STRATEGIES, *TOWER_STRATEGIES)


@runtime_checkable
class Placement(Protocol):
    """What the training loop needs from a parallel strategy (``DataParallel``, ``TowerParallel``)."""

    mesh: Mesh
    replicated: NamedSharding   # the state's layout when a checkpoint is restored, before ``put_state``

    @property
    def num_devices(self) -> int:
        """Devices over all hosts."""

    @property
    def data_size(self) -> int:
        """Ways the batch is split (every device, or the mesh's ``"data"`` axis)."""

    @property
    def axis_name(self) -> str | None:
        """The axis a step averages gradients and sums metrics over (``pmap``'s), or None."""

    def step_model(self, model: nn.Module) -> Any:
        """What a step factory takes as its model: anything with ``model.apply``'s signature."""

    def check_batch_size(self, global_batch: int) -> None:
        """One-line ``ValueError`` unless ``global_batch`` splits over the devices."""

    def put_state(self, state: Any) -> Any:
        """Host (or any) state -> the state as the compiled steps take it."""

    def unreplicate(self, state: Any) -> Any:
        """Device state -> one logical copy, still on device (what checkpoints and evaluation read)."""

    def host_state(self, state: Any) -> Any:
        """Device state -> one copy as NumPy arrays."""

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """This process's slice of the global batch -> device arrays."""

    def prefetch(self, batches: Iterable[dict[str, np.ndarray]], size: int = 2) -> Iterator[dict[str, Any]]:
        """Device batches ``size`` ahead of the consumer."""

    def compile_train_step(self, step_fn: Callable, state: Any) -> Callable:
        """``step_fn(state, batch) -> (state, metrics)`` compiled, the state donated."""

    def compile_eval_step(self, eval_fn: Callable, state: Any) -> Callable:
        """``eval_fn(variables, batch) -> sums`` compiled; called with ``state.variables``."""


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown parallel strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def model_options(strategy: str, accepted: Iterable[str]) -> dict[str, Any]:
    """Model options a strategy needs (``accepted``: the model's options): cross-replica batch norm under pmap."""
    check_strategy(strategy)
    return {"bn_axis_name": PMAP_AXIS} if strategy == "pmap" and "bn_axis_name" in accepted else {}


def placement_for(strategy: str, model: nn.Module, devices: list | None = None) -> Placement:
    """The placement of ``strategy`` (``STRATEGIES``) for ``model`` over ``devices`` (default: all of them)."""
    check_strategy(strategy)
    if strategy in TOWER_STRATEGIES:
        mesh = None if devices is None else tower_mesh(devices)
        return TowerParallel(model, mesh, layout=TOWER_STRATEGIES[strategy])
    return DataParallel(strategy, devices)
