"""Parameter and FLOP counts, and variable initialisation.

FLOPs are counted analytically from the layers actually called (no
compilation): 2 x multiply-accumulates of every convolution, transposed
convolution and dense layer, per image, at a given input size. Pooling,
normalization and activations are not counted (torchvision's convention).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def init_variables(model: nn.Module, resolution: int | tuple[int, int] = 224, seed: int = 0,
                   batch: int = 1, channels: int = 3) -> dict[str, Any]:
    """``model.init`` (jitted) on a dummy NHWC batch; returns the variables dict.

    The parameters are drawn with JAX's non-partitionable threefry (``jax.threefry_partitionable(False)``)
    from a ``threefry2x32`` key, so they depend on ``seed`` alone. The partitionable scheme, JAX's default,
    hashes a 2x32-bit counter built from every dimension's iota for every element; XLA:CPU takes about
    four times as long to compile each such draw, and a model's init is one draw per parameter array
    (``python -m benchmarks.cpu.init_compile``). Initial
    parameters are replicated, so the partitionable scheme's sharding benefit does not apply here.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    shape = (batch, h, w, channels)
    with jax.threefry_partitionable(False):
        key = jax.random.key(seed, impl="threefry2x32")
        try:
            hash(model)
        except TypeError:   # a module with unhashable fields: traced afresh
            return jax.jit(lambda k: model.init(k, jnp.zeros(shape, jnp.float32), train=False))(key)
        return _init(model, shape, key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init(model: nn.Module, shape: tuple[int, ...], key: jax.Array) -> dict[str, Any]:
    """One compiled init per (module, input shape), whatever the seed: another seed reuses it."""
    return model.init(key, jnp.zeros(shape, jnp.float32), train=False)


def count_params(variables: dict[str, Any]) -> int:
    """Number of trainable parameters (the ``params`` collection; arrays or shape structs)."""
    return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(variables["params"]))


def count_flops(model: nn.Module, resolution: int | tuple[int, int] = 224, variables: Any = None) -> int:
    """FLOPs (2 x MACs) of one forward pass of one image at ``resolution``, in eval mode.

    ``variables`` (arrays or shape structs) saves tracing ``model.init`` when the caller has them.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    shapes = variables if variables is not None else jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), x)
    macs, active = [0], []

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name != "__call__" or any(a is m for a in active):
            return next_fun(*args, **kwargs)    # a subclass's super().__call__ (layers.Conv) counts once
        active.append(m)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            active.pop()
        if isinstance(m, nn.ConvTranspose):
            macs[0] += math.prod(args[0].shape[:-1]) * args[0].shape[-1] * math.prod(m.kernel_size) * m.features
        elif isinstance(m, nn.Conv):
            macs[0] += math.prod(out.shape) * math.prod(m.kernel_size) * args[0].shape[-1] // m.feature_group_count
        elif isinstance(m, nn.Dense):
            macs[0] += math.prod(out.shape) * args[0].shape[-1]
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), shapes, x)
    return 2 * macs[0]
