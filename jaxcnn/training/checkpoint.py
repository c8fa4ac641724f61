"""Checkpoints with orbax: asynchronous, atomic, keep the last K, restore onto any device layout.

A checkpoint is the ``TrainState`` plus a JSON ``meta`` dict (model name and
options, step, plateau-control state, the run's config). orbax writes each
step into a temporary directory and renames it when complete, so a run killed
at any moment leaves only whole checkpoints; ``latest_step`` ignores partial
ones. Restoring takes the *current* run's state as the target, so arrays land
with the current shardings (saved on 8 devices, restored on 1, or back).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves every ``every_steps`` steps (and when forced), keeps the last ``keep``."""

    def __init__(self, directory: str, *, every_steps: int, keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=max(1, every_steps),
                                               enable_async_checkpointing=asynchronous, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
        """Starts saving (returns at once when asynchronous); True if a save was started."""
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``(state, meta)`` shaped and sharded like ``target`` (a state on the current devices)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                     meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            meta = self.read_meta(step) or {}
            raise ValueError(f"checkpoint {self.directory} step {step} (model {meta.get('model', '?')}) does not "
                             f"fit this run's state: {str(e).splitlines()[0][:200]}") from None
        return out["state"], out["meta"]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
