"""Checkpoints with orbax: asynchronous, atomic, keep the last K, restore onto any device layout.

A checkpoint is the ``TrainState`` plus a JSON ``meta`` dict (model name and
options, step, plateau-control state, the run's config). orbax writes each
step into a temporary directory and renames it when complete, so a run killed
at any moment leaves only whole checkpoints; ``latest_step`` ignores partial
ones. Restoring takes the *current* run's state as the target, so arrays land
with the current shardings (saved on 8 devices, restored on 1, or back).

Checkpoint ``S`` holds the state after ``S`` optimizer steps. Commands that only
read (evaluation, ``--checkpoint``) open a directory with
``Checkpointer.open_existing``, which creates nothing and refuses a directory
without checkpoints in one line.

``diverged_message`` is what a run says when a step's loss or gradients are
NaN/Inf: which step, and which checkpoint is still good, where *good* means
every array finite and ``max |param| <= PARAM_BOUND``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.training.state import ema_of

# A checkpoint whose largest |parameter| exceeds this is not offered as good after a divergence. The
# parameters of a healthy CNN are O(1) (conv and dense weights well under 10, batch-norm scales a few
# units); an exploding run passes 1e6 several steps before float32 overflows (a weight of 1e19 already
# overflows in the squares of weight decay and batch-norm variances), so the bound separates the two
# with orders of magnitude to spare on either side.
PARAM_BOUND = 1e6


def checkpoint_steps(directory: str) -> list[int]:
    """The steps of the complete checkpoints in ``directory`` (orbax names them by step; a partial one
    carries a temporary suffix), ascending; [] when there is none or no directory."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(e.name) for e in os.scandir(directory) if e.is_dir() and e.name.isdigit())


class Checkpointer:
    """Saves every ``every_steps`` steps (and when forced), keeps the last ``keep``."""

    def __init__(self, directory: str, *, every_steps: int, keep: int = 3, asynchronous: bool = True,
                 create: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=max(1, every_steps),
                                               enable_async_checkpointing=asynchronous, create=create)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    @classmethod
    def open_existing(cls, workdir: str) -> "Checkpointer":
        """The checkpoints of the run in ``workdir`` for reading; creates nothing. A one-line ``ValueError``
        ("no checkpoints in WORKDIR") when there are none."""
        directory = os.path.join(workdir, "checkpoints")
        if not checkpoint_steps(directory):
            raise ValueError(f"no checkpoints in {workdir}" + ("" if os.path.isdir(workdir) else
                                                               " (no such directory)"))
        return cls(directory, every_steps=1, create=False)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def will_save(self, step: int, force: bool = False) -> bool:
        """Whether ``save(step, ..., force=force)`` would write a checkpoint."""
        return force or self.manager.should_save(step)

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
        error = None
        for fields, rebuild in self._restore_targets(target):
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, fields)
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                         meta=ocp.args.JsonRestore()))
                return rebuild(out["state"]), out["meta"]
            except (ValueError, KeyError, TypeError) as e:
                error = error or e
        meta = self.read_meta(step) or {}
        raise ValueError(f"checkpoint {self.directory} step {step} (model {meta.get('model', '?')}) does not "
                         f"fit this run's state: {str(error).splitlines()[0][:200]}") from None

    @staticmethod
    def _restore_targets(target: Any):
        """``(fields, rebuild)`` pairs to try in turn: what to restore a ``TrainState`` ``target`` as, and how
        to make the ``TrainState`` of it. The weight EMA follows the checkpoint, not the target: one saved
        without an EMA (an older run, or ``ema_decay=0``) restores into a target with one, whose average then
        starts again as a copy of the restored weights, and an EMA saved is restored even into a target
        without one (so evaluation can select it)."""
        if not (dataclasses.is_dataclass(target) and hasattr(target, "ema")):
            yield target, lambda restored: restored
            return
        fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target) if f.name != "ema"}
        saved = target.ema or {"params": target.params, "batch_stats": target.batch_stats}

        def rebuild(restored: dict) -> Any:
            restored = dict(restored)
            if not restored.get("ema"):   # none saved: the target's choice, a fresh average or none
                restored["ema"] = ema_of(restored["params"], restored["batch_stats"]) if target.ema else {}
            return type(target)(**restored)

        variants = [{**fields, "ema": saved}, {**fields, "ema": {}}, fields]
        if not target.ema:   # most likely first
            variants = variants[1:] + variants[:1]
        for variant in variants:
            yield variant, rebuild

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def state_health(state: Any) -> tuple[bool, float]:
    """``(every array of the state finite, max |param|)`` (NaN when a parameter is not finite)."""
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]
    finite = all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))
    params = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))]
    peaks = [float(np.max(np.abs(x))) for x in params if x.size]
    peak = float("nan") if any(np.isnan(peaks)) else max(peaks, default=0.0)
    return finite, peak


def _describe(finite: bool, peak: float) -> str:
    return f"max |param| {peak:.2g}" + ("" if finite else ", non-finite arrays")


def is_good(finite: bool, peak: float, bound: float = PARAM_BOUND) -> bool:
    return finite and np.isfinite(peak) and peak <= bound


def diverged_message(ckpt: Checkpointer, step: int, state: Any, bound: float = PARAM_BOUND) -> str:
    """One line for a run whose step ``step`` (1-based: the update from the state after ``step - 1`` steps)
    gave a NaN/Inf loss or gradient. ``state`` is the current state (the update was not applied, so it is
    the state after ``step - 1`` steps), on the devices a checkpoint restores onto. Names the newest
    checkpoint whose state is good (``is_good``) and those that are not."""
    ckpt.wait()
    now = _describe(*state_health(state))
    bad, good = [], None
    for s in reversed(ckpt.all_steps()):
        restored, _ = ckpt.restore(state, s)
        finite, peak = state_health(restored)
        if is_good(finite, peak, bound):
            good = (s, peak)
            break
        bad.append(f"{s} ({_describe(finite, peak)})")
    head = (f"the loss or gradients of step {step} were NaN/Inf; training stopped without applying it "
            f"(the state after step {step - 1}: {now})")
    where = (f"last good checkpoint: step {good[0]} (max |param| {good[1]:.2g}) in {ckpt.directory}" if good
             else f"no good checkpoint in {ckpt.directory}")
    rejected = (f"; not good (non-finite, or max |param| > {bound:.0e}): step {', '.join(bad)}" if bad else "")
    return f"{head}; {where}{rejected}"
