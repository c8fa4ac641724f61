"""Run directories: a workdir is resumed only when its stored config matches the new run's.

``prepare(cfg, reuse)`` runs before training. The config a run was started
with is stored as ``config.json`` in its workdir (older runs: the config in
their latest checkpoint). When the workdir holds checkpoints, the two configs
are compared in the fields that change what the run computes; the fields in
``IGNORED`` (where the run lives, how often it reports and saves, how it is
laid out on devices, where it stops) may differ freely, since a run resumed
with them changed ends where an uninterrupted one would.

``reuse`` is the user's choice for a workdir that holds another run:

* ``None`` (the default): resume a matching run; any other difference is a
  one-line ``ValueError`` naming the fields and the ways out.
* ``"resume"``: continue deliberately although fields in ``RESUMABLE`` changed
  (the schedule: epochs, optimizer settings, label smoothing), which leave the
  state's structure and the data as they were. The other fields still refuse.
* ``"overwrite"``: discard the old run's checkpoints, metrics, TensorBoard
  events, plot and stored config, and start afresh.

``finished_run`` is what a rerun of a finished run returns instead of
training again: its last evaluation, read from ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

from jaxcnn.training.checkpoint import Checkpointer, checkpoint_steps
from jaxcnn.training.config import TrainConfig, to_dict
from jaxcnn.training.metrics_log import last_eval

CONFIG_FILE = "config.json"
REUSE_CHOICES = (None, "resume", "overwrite")
# fields that never change what a run computes (dotted names; a name covers its subfields)
IGNORED = ("workdir", "data_dir", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps",
           "eval_batch_size", "max_steps", "strategy", "data_workers")
# fields that reuse="resume" may change under a run already under way: the schedule
RESUMABLE = ("epochs", "optimizer", "label_smoothing")
# what a run leaves in its workdir (overwrite removes exactly these)
RUN_FILES = ("checkpoints", "metrics.jsonl", "tensorboard", "learning_curves.png", CONFIG_FILE)


def jsonable(d: Any) -> Any:
    """``d`` as JSON would give it back (tuples as lists, dataclasses as dicts, other objects as str)."""
    import dataclasses
    if isinstance(d, dict):
        return {str(k): jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [jsonable(v) for v in d]
    if dataclasses.is_dataclass(d) and not isinstance(d, type):
        return jsonable(dataclasses.asdict(d))
    return d if isinstance(d, (int, float, str, bool, type(None))) else str(d)


def config_dict(cfg: TrainConfig) -> dict:
    return jsonable(to_dict(cfg))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):   # an empty dict sets nothing
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _covered(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


_ABSENT = "(unset)"


def differences(stored: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (stored value, new value)}`` for the fields that differ and change the computation."""
    a, b = _flat(stored), _flat(new)
    out = {}
    for key in sorted(set(a) | set(b)):
        if _covered(key, IGNORED):
            continue
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:
            out[key] = (va, vb)
    return out


def stored_config(workdir: str) -> dict | None:
    """The config the run in ``workdir`` was started with: ``config.json``, else its latest checkpoint's."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            pass   # a file cut short by a kill: the checkpoint's copy follows
    if checkpoint_steps(os.path.join(workdir, "checkpoints")):
        ckpt = Checkpointer.open_existing(workdir)
        try:
            meta = ckpt.read_meta() or {}
        finally:
            ckpt.close()
        return meta.get("config")
    return None


def write_config(workdir: str, cfg: TrainConfig) -> str:
    """Stores ``cfg`` as the workdir's ``config.json`` (atomically)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(config_dict(cfg), f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path


def _show(v: Any) -> str:
    return v if v is _ABSENT else repr(v)


def prepare(cfg: TrainConfig, reuse: str | None = None, *, lead: bool = True) -> None:
    """Checks (and for ``overwrite`` clears) ``cfg.workdir`` before a run; see the module docstring.
    ``lead``: this process writes and deletes (process 0 of a multi-host run)."""
    if reuse not in REUSE_CHOICES:
        raise ValueError(f"unknown workdir reuse {reuse!r}; valid: resume, overwrite (or none)")
    workdir = cfg.workdir
    has_run = bool(checkpoint_steps(os.path.join(workdir, "checkpoints")))
    if reuse == "overwrite":
        if lead:
            for name in RUN_FILES:
                path = os.path.join(workdir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
            if has_run:
                print(f"{workdir}: the previous run was removed (overwrite)", file=sys.stderr)
        has_run = False
    if has_run:
        stored = stored_config(workdir)
        diff = differences(stored, config_dict(cfg)) if stored is not None else {}
        if diff:
            fixed = {k: v for k, v in diff.items() if not (reuse == "resume" and _covered(k, RESUMABLE))}
            if fixed:
                listed = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in fixed.items())
                schedule_only = all(_covered(k, RESUMABLE) for k in fixed)
                ways = ("use another workdir, --resume to continue this run under the new schedule, or "
                        "--overwrite to discard it" if schedule_only else
                        "use another workdir, or --overwrite to discard it")
                raise ValueError(f"{workdir} holds a run with another config ({listed}); {ways}")
        if lead:
            latest = checkpoint_steps(os.path.join(workdir, "checkpoints"))[-1]
            how = f"a changed schedule ({', '.join(diff)})" if diff else "the same config"
            print(f"{workdir}: picking up its run, checkpointed at step {latest}, with {how}", file=sys.stderr)
    if lead:
        write_config(workdir, cfg)


def finished_run(workdir: str, step: int, total_steps: int, metrics_path: str) -> dict[str, Any]:
    """The result of rerunning a run that has already done its ``total_steps``: nothing is trained or
    written; ``eval`` is its last evaluation."""
    ev = last_eval(metrics_path, up_to_step=step)
    print(f"{workdir}: the run is finished (step {step} of {total_steps}); its last evaluation follows. "
          "Use another workdir or --overwrite to train again, or more epochs with --resume to continue it",
          file=sys.stderr)
    plot = os.path.join(workdir, "learning_curves.png")
    return {"step": step, "eval": ev, "metrics": metrics_path, "finished": True,
            **({"plot": plot} if os.path.isfile(plot) else {})}
