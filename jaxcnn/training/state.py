"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxcnn.model_stats import init_variables


RNG_IMPL = "threefry2x32"  # fixed, so checkpoints do not depend on jax_default_prng_impl


@struct.dataclass
class TrainState:
    """params, batch_stats (empty dict for models without BN), optax state, step, PRNG key data, weight EMA.

    ``rng`` is raw ``uint32`` threefry key data (``jax.random.key_data``), so
    the state checkpoints as plain arrays whatever the process's default PRNG;
    the dropout key of step ``s`` is ``fold_in(wrap_key_data(rng), s)``, so a
    resumed run draws the same masks.

    ``ema`` is ``{"params": ..., "batch_stats": ...}``, the exponential moving average of the weights and
    batch-norm statistics (``jaxcnn.training.steps.with_ema``), or ``{}`` when the run keeps none.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema: Any = struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        """The ``variables`` dict for ``model.apply``."""
        out = {"params": self.params}
        if self.batch_stats:
            out["batch_stats"] = self.batch_stats
        return out


def variables_of(state: Any, ema: bool = False) -> dict[str, Any]:
    """The ``variables`` dict for ``model.apply`` of a ``TrainState`` (trained or restored): the raw
    weights, or with ``ema`` their exponential moving average (parameters and batch-norm statistics).
    A state without an average (trained with ``ema_decay=0``) and ``ema`` is a one-line ``ValueError``."""
    if not ema:
        return state.variables
    if not state.ema:
        raise ValueError("this run keeps no weight EMA (trained with ema_decay=0); leave out --ema")
    out = {"params": state.ema["params"]}
    if state.ema.get("batch_stats"):
        out["batch_stats"] = state.ema["batch_stats"]
    return out


def ema_of(params: Any, batch_stats: Any) -> dict[str, Any]:
    """A fresh average: a copy of the weights and statistics (the first average is the weights)."""
    copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)  # noqa: E731
    return {"params": copy(params), "batch_stats": copy(batch_stats)}


def torchvision_ema_decay(decay: float, global_batch: int, every: int, epochs: float) -> float:
    """The per-update decay torchvision's classification reference derives from ``--model-ema-decay``
    (``references/classification/train.py``): ``alpha = min(1, (1 - decay) * global_batch * every / epochs)``,
    decay ``1 - alpha``; so that the average's horizon, in epochs, does not depend on the batch size."""
    alpha = min(1.0, (1.0 - decay) * global_batch * every / epochs)
    return 1.0 - alpha


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
                       seed: int = 0, variables: dict[str, Any] | None = None, ema: bool = False) -> TrainState:
    """Initialises (or adopts ``variables``, e.g. pretrained) and builds the optimizer state; with ``ema``
    the weight average starts as a copy of the weights."""
    rng = jax.random.fold_in(jax.random.key(seed, impl=RNG_IMPL), 1)
    if variables is None:
        variables = init_variables(model, image_shape[:2], seed=seed, channels=image_shape[2])
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=jax.random.key_data(rng),
                      ema=ema_of(params, batch_stats) if ema else {})
