"""The optimizer: SGD-momentum, AdamW, LARS or LAMB from optax, masked weight decay, LR schedules.

``make_optimizer`` returns ``optax.chain([clip], OPTIMIZER(schedule), plateau scale)``:

* ``clip_grad_norm`` > 0: ``optax.clip_by_global_norm`` first, on the raw
  gradients (torch's ``clip_grad_norm_`` before ``optimizer.step()``).
* ``name="sgd"`` (default): L2 weight decay (``optax.add_decayed_weights``)
  adds ``weight_decay * w`` to the gradient *before* momentum, as in
  Krizhevsky et al. and torch's ``SGD(weight_decay=...)``; then ``optax.sgd``:
  ``v = momentum * v + g; w -= lr_t * v`` (torch's convention), optionally
  Nesterov.
* ``name="adamw"`` (``optax.adamw``, Loshchilov & Hutter): Adam's moments with
  bias correction and *decoupled* decay, ``w -= lr_t * (m_hat / (sqrt(v_hat) +
  eps) + weight_decay * w)`` (torch's ``AdamW``).
* ``name="lars"`` (You et al. 2017, as MLPerf's ResNet-50 reference): ``u = g +
  weight_decay * w`` where the ``decay`` mask says; on kernels the learning
  rate is scaled by the trust ratio ``trust_coefficient * |w| / (|g| +
  weight_decay * |w| + eps)`` (per array; 1 where ``|w|`` or ``|g|`` is 0);
  ``v = momentum * v + lr_t * ratio * u; w -= v``. Biases and normalization
  parameters are never adapted and, with the default mask, not decayed: MLPerf
  skips ``batch_normalization`` and ``bias`` variables for both. (optax's own
  ``lars`` divides by ``|g + wd w|`` instead; the two agree only when ``g`` and
  ``w`` are parallel.)
* ``name="lamb"`` (``optax.lamb``, You et al. 2019): Adam's ``r = m_hat /
  (sqrt(v_hat) + eps)``, ``u = r + weight_decay * w``, ``w -= lr_t * |w| / |u| * u``
  per array (every array, as in the paper).
* Weight decay mask, ``decay``: ``kernels`` (default; arrays of rank >= 2: conv
  and dense kernels), ``kernels+biases`` (also biases of convolutions and dense
  layers, not of norms: torchvision's ``--norm-weight-decay 0``), ``all`` (every
  parameter: torch's plain ``weight_decay``). A normalization parameter is a
  rank-1 array in a module that has a ``scale`` (BatchNorm, LayerNorm,
  GroupNorm); a bias is any other array of rank < 2.
* Schedules (``optax`` schedules, per step): ``constant``, ``step`` (x
  ``decay_factor`` at each epoch of ``decay_epochs``), ``cosine``, ``poly``
  (MLPerf's ResNet-50 LARS schedule: from the learning rate to
  ``end_learning_rate`` as ``(1 - t / (T + 1)) ** poly_power`` over the T steps
  after the warm-up); each with an optional linear warm-up from 0. ``plateau``: AlexNet's "divide the learning rate by
  10 when the validation error stops improving" — a host-side
  ``PlateauControl`` reads the validation error after each evaluation and sets
  the last link of the chain, an injected ``optax.scale``. Both work for every
  optimizer: the schedule is the optimizer's learning rate, the plateau factor
  multiplies its update.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "step", "cosine", "poly", "plateau")
OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
DECAY_MASKS = ("kernels", "kernels+biases", "all")
DEFAULT_EPS = {"sgd": 0.0, "adamw": 1e-8, "lars": 0.0, "lamb": 1e-6}   # optax's (torch AdamW: 1e-8)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"                     # sgd, adamw, lars, lamb
    learning_rate: float = 0.1
    momentum: float = 0.9                 # sgd, lars (adamw and lamb: b1)
    nesterov: bool = False                # sgd, adamw (NAdamW), lars
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    decay_epochs: Sequence[float] = (30, 60, 80)
    decay_factor: float = 0.1
    plateau_patience: int = 1
    plateau_min_delta: float = 0.0
    decay: str = "kernels"                # which parameters weight_decay applies to: kernels, kernels+biases, all
    clip_grad_norm: float = 0.0           # > 0: clip the gradients' global norm to this first
    b1: float = 0.9                       # adamw, lamb: first-moment decay
    b2: float = 0.999                     # adamw, lamb: second-moment decay
    eps: float | None = None              # adamw, lamb: denominator epsilon; lars: trust-ratio epsilon; None: optax's
    trust_coefficient: float = 0.001      # lars: eta of the trust ratio
    end_learning_rate: float = 1e-4       # poly: the learning rate the decay ends at (one step after the last)
    poly_power: float = 2.0               # poly: the exponent of the decay

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.decay not in DECAY_MASKS:
            raise ValueError(f"unknown decay mask {self.decay!r}; valid: {', '.join(DECAY_MASKS)}")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0, momentum in [0, 1), weight_decay >= 0")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1) or self.clip_grad_norm < 0 or self.trust_coefficient <= 0:
            raise ValueError("b1 and b2 must be in [0, 1), clip_grad_norm >= 0, trust_coefficient > 0")
        if self.eps is not None and self.eps < 0:
            raise ValueError(f"eps must be >= 0 or None, got {self.eps}")
        if self.eps is not None and self.name == "sgd":
            raise ValueError("eps applies to adamw, lamb and lars; sgd has none")
        if self.nesterov and self.name == "lamb":
            raise ValueError("nesterov applies to sgd, adamw and lars, not lamb")


def learning_rate_schedule(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Per-step learning rate (the plateau factor is applied separately)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    elif cfg.schedule == "poly":
        main = optax.polynomial_schedule(lr, cfg.end_learning_rate, cfg.poly_power,
                                         max(total_steps - warmup, 0) + 1)
    elif cfg.schedule == "step":
        bounds = {int(round(e * steps_per_epoch)) - warmup: cfg.decay_factor for e in cfg.decay_epochs}
        main = optax.piecewise_constant_schedule(lr, {b: f for b, f in bounds.items() if b > 0})
    else:
        main = optax.constant_schedule(lr)
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def parameter_kinds(params: Any) -> Any:
    """``kernel`` (rank >= 2), ``norm`` (rank < 2 in a module with a ``scale``) or ``bias`` for every leaf."""
    def kind(path: tuple, leaf: Any) -> str:
        if leaf.ndim >= 2:
            return "kernel"
        parent = params
        for entry in path[:-1]:
            parent = parent[entry.key]
        return "norm" if isinstance(parent, Mapping) and "scale" in parent else "bias"
    return jax.tree_util.tree_map_with_path(kind, params)


def decay_mask(params: Any, decay: str = "kernels") -> Any:
    """True where weight decay applies: ``kernels`` (rank >= 2), ``kernels+biases`` (all but norms), ``all``."""
    if decay not in DECAY_MASKS:
        raise ValueError(f"unknown decay mask {decay!r}; valid: {', '.join(DECAY_MASKS)}")
    if decay == "kernels":
        return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    if decay == "all":
        return jax.tree_util.tree_map(lambda p: True, params)
    return jax.tree_util.tree_map(lambda kind: kind != "norm", parameter_kinds(params))


def scale_by_lars_trust_ratio(weight_decay: float, trust_coefficient: float, eps: float,
                              mask: Any) -> optax.GradientTransformation:
    """MLPerf's LARS direction before the learning rate and momentum: ``g + wd * w`` (``wd`` where ``mask``
    is True), times ``eta * |w| / (|g| + wd * |w| + eps)`` on kernels (rank >= 2), unscaled elsewhere."""
    def update(grads, state, params):
        decayed = mask(params) if callable(mask) else mask

        def one(g, w, decay):
            wd = weight_decay if decay else 0.0
            u = g + wd * w
            if w.ndim < 2:
                return u
            w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
            ratio = trust_coefficient * w_norm / (g_norm + wd * w_norm + eps)
            return jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0).astype(u.dtype) * u
        return jax.tree_util.tree_map(one, grads, params, decayed), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """The optax chain described in the module docstring."""
    lr = learning_rate_schedule(cfg, steps_per_epoch, total_steps)
    mask = functools.partial(decay_mask, decay=cfg.decay)
    eps = DEFAULT_EPS[cfg.name] if cfg.eps is None else cfg.eps
    parts = [optax.clip_by_global_norm(cfg.clip_grad_norm)] if cfg.clip_grad_norm > 0 else []
    if cfg.name == "sgd":
        if cfg.weight_decay > 0:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask))
        parts.append(optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adamw":
        parts.append(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=eps, weight_decay=cfg.weight_decay, mask=mask,
                                 nesterov=cfg.nesterov))
    elif cfg.name == "lars":
        parts += [scale_by_lars_trust_ratio(cfg.weight_decay, cfg.trust_coefficient, eps, mask),
                  optax.scale_by_learning_rate(lr),
                  optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov)]
    else:
        parts.append(optax.lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=eps, weight_decay=cfg.weight_decay, mask=mask))
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
