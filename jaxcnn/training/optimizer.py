"""The optimizer: SGD with momentum from optax pieces, L2 masked off biases/norms, LR schedules.

``make_optimizer`` returns ``optax.chain(L2, SGD-momentum(schedule), plateau scale)``:

* L2 weight decay (``optax.add_decayed_weights``) adds ``weight_decay * w`` to
  the gradient *before* momentum, as in Krizhevsky et al. and torch's
  ``SGD(weight_decay=...)``; it applies to kernels only (arrays of rank >= 2),
  never to biases or BatchNorm scales/offsets.
* SGD (``optax.sgd``): ``v = momentum * v + g; w -= lr_t * v`` (torch's
  convention), optionally Nesterov.
* Schedules (``optax`` schedules, per step): ``constant``, ``step`` (x
  ``decay_factor`` at each epoch of ``decay_epochs``), ``cosine``; each with an
  optional linear warm-up. ``plateau``: AlexNet's "divide the learning rate by
  10 when the validation error stops improving" — a host-side
  ``PlateauControl`` reads the validation error after each evaluation and sets
  the last link of the chain, an injected ``optax.scale``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "step", "cosine", "plateau")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    decay_epochs: Sequence[float] = (30, 60, 80)
    decay_factor: float = 0.1
    plateau_patience: int = 1
    plateau_min_delta: float = 0.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0, momentum in [0, 1), weight_decay >= 0")


def learning_rate_schedule(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Per-step learning rate (the plateau factor is applied separately)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    elif cfg.schedule == "step":
        bounds = {int(round(e * steps_per_epoch)) - warmup: cfg.decay_factor for e in cfg.decay_epochs}
        main = optax.piecewise_constant_schedule(lr, {b: f for b, f in bounds.items() if b > 0})
    else:
        main = optax.constant_schedule(lr)
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(params: Any) -> Any:
    """True for kernels (rank >= 2), False for biases and normalization parameters."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """The optax chain described in the module docstring."""
    parts = []
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
    parts.append(optax.sgd(learning_rate_schedule(cfg, steps_per_epoch, total_steps), momentum=cfg.momentum or None,
                           nesterov=cfg.nesterov))
    parts.append(optax.inject_hyperparams(optax.scale)(step_size=1.0))
    return optax.chain(*parts)


def current_learning_rate(cfg: OptimizerConfig, opt_state: Any, step: int, steps_per_epoch: int,
                          total_steps: int) -> float:
    """The learning rate in effect at ``step`` (schedule x plateau factor)."""
    return float(learning_rate_schedule(cfg, steps_per_epoch, total_steps)(step)) * plateau_factor(opt_state)


def plateau_factor(opt_state: Any) -> float:
    return float(opt_state[-1].hyperparams["step_size"])


def set_plateau_factor(opt_state: Any, factor: float) -> Any:
    last = opt_state[-1]
    hyper = dict(last.hyperparams, step_size=jnp.asarray(factor, last.hyperparams["step_size"].dtype))
    return (*opt_state[:-1], last._replace(hyperparams=hyper))


@dataclasses.dataclass
class PlateauControl:
    """Divides the learning rate by ``1 / factor`` when the validation error stops improving.

    Call ``update(val_error, opt_state)`` after each evaluation; it returns the
    (possibly changed) ``opt_state``. Its own state (best, bad evaluations) is
    a small dict saved with checkpoints.
    """

    factor: float = 0.1
    patience: int = 1
    min_delta: float = 0.0
    best: float = float("inf")
    bad: int = 0

    def update(self, val_error: float, opt_state: Any) -> Any:
        if val_error < self.best - self.min_delta:
            self.best, self.bad = val_error, 0
            return opt_state
        self.bad += 1
        if self.bad <= self.patience:
            return opt_state
        self.bad = 0
        return set_plateau_factor(opt_state, plateau_factor(opt_state) * self.factor)

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad = float(d["best"]), int(d["bad"])
