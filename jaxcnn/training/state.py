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
    """params, batch_stats (empty dict for models without BN), optax state, step, PRNG key data.

    ``rng`` is raw ``uint32`` threefry key data (``jax.random.key_data``), so
    the state checkpoints as plain arrays whatever the process's default PRNG;
    the dropout key of step ``s`` is ``fold_in(wrap_key_data(rng), s)``, so a
    resumed run draws the same masks.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        """The ``variables`` dict for ``model.apply``."""
        out = {"params": self.params}
        if self.batch_stats:
            out["batch_stats"] = self.batch_stats
        return out


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
                       seed: int = 0, variables: dict[str, Any] | None = None) -> TrainState:
    """Initialises (or adopts ``variables``, e.g. pretrained) and builds the optimizer state."""
    rng = jax.random.fold_in(jax.random.key(seed, impl=RNG_IMPL), 1)
    if variables is None:
        variables = init_variables(model, image_shape[:2], seed=seed, channels=image_shape[2])
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=jax.random.key_data(rng))
