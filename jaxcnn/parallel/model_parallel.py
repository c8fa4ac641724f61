"""Model parallelism for the two-tower AlexNet: one tower per device of a 2-wide ``"model"`` mesh axis.

Krizhevsky et al. (2012) split their net over two GPUs: each GPU holds one
*tower* (half of the kernels of every layer) and the GPUs talk only at conv3
and the fully connected layers. ``jaxcnn.models.alexnet`` stores the towers as
channel halves (first half tower A, second half tower B; conv2, conv4, conv5
are ``groups=2`` convolutions), so the placement is a sharding of the
*unchanged* Flax variables:

====================  =========================  ==============================
layer                 sharded over ``"model"``   communication (per forward)
====================  =========================  ==============================
conv1, conv2          kernel out axis, bias      none (conv1: every tower sees
                                                 the whole image)
conv3                 kernel out axis, bias      all_gather of norm2/pool2
conv4, conv5          kernel out axis, bias      none
fc6, fc7              kernel out axis, bias      all_gather of their input
fc8                   kernel *in* axis           psum of the partial logits
====================  =========================  ==============================

Each device computes its tower's half of every activation (and of the units
of fc6/fc7); fc8 combines the towers by summing their partial logits. The
batch is split over the ``"data"`` axis, so a ``(data, model)`` mesh runs
data parallelism across tower pairs: gradients of the tower-sharded
parameters are all-reduced over ``"data"`` only.

A checkpoint is the same pytree in every layout (``to_tower_layout`` places
standard variables, ``from_tower_layout`` brings them back as NumPy arrays),
so a run can switch between one device, ``DataParallel`` and this layout.

Two layouts of the same placement:

* ``"shard_map"`` (default): the forward is a ``jax.shard_map`` of the model
  given ``tower_axis="model"``: the model itself performs the paper's
  exchanges (``all_gather`` / ``psum`` over ``"model"``,
  ``jaxcnn.models.alexnet``); this module only places the parameters.
* ``"jit"``: ``model.apply`` under ``jax.jit`` with the tower-sharded
  parameters; XLA's partitioner chooses the collectives.
``python -m benchmarks.twotower_layouts`` compares them with data parallelism.

Dropout (train mode): the model draws the masks of the whole batch from the
same ``rngs={"dropout": key}`` as on one device and each device keeps its
block, so a train step equals the single-device step, masks included.

Usage::

    mesh = tower_mesh()                        # (len(devices)//2, 2) devices, axes ("data", "model")
    tp = TowerParallel(create_model("alexnet_twotower"), mesh)
    step = tp.compile_train_step(make_train_step(tp, tx), state)   # tp.apply stands in for model.apply
    state, metrics = step(tp.put_state(state), tp.put_batch(batch))
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.layers import check_images
from jaxcnn.models.alexnet import min_input_size
from jaxcnn.parallel.data_parallel import prefetch_to_device

DATA_AXIS = "data"
MODEL_AXIS = "model"
LAYOUTS = ("shard_map", "jit")
TOWERS = 2

_CONVS = tuple(f"conv{i}" for i in range(1, 6))
_TOWER_OUT = {"kernel": P(None, None, None, MODEL_AXIS), "bias": P(MODEL_AXIS)}
# the sharding of every parameter of the two-tower net: the tower (channel half) axis over "model"
PARAM_SPECS: dict[str, dict[str, P]] = {
    **{name: _TOWER_OUT for name in _CONVS},
    "fc6": {"kernel": P(None, MODEL_AXIS), "bias": P(MODEL_AXIS)},
    "fc7": {"kernel": P(None, MODEL_AXIS), "bias": P(MODEL_AXIS)},
    "fc8": {"kernel": P(MODEL_AXIS, None), "bias": P()},
}
_ACT = P(DATA_AXIS, None, None, MODEL_AXIS)  # NHWC activations: batch over data, channels (towers) over model
_FEATURE_SPECS = {**{k: _ACT for k in (*_CONVS, "norm1", "norm2", "pool1", "pool2", "pool5")},
                  **{k: P(DATA_AXIS, MODEL_AXIS) for k in ("fc6", "fc7", "pre_logits")}}


# ----------------------------------------------------------------------------
# mesh and parameter placement


def tower_mesh(devices: list | None = None) -> Mesh:
    """A ``("data", "model")`` mesh of shape ``(len(devices) // 2, 2)``; neighbouring devices pair up as towers."""
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) % TOWERS:
        raise ValueError(f"two-tower model parallelism needs an even number of devices; got {len(devices)}")
    return Mesh(np.array(devices).reshape(-1, TOWERS), (DATA_AXIS, MODEL_AXIS))


def check_mesh(mesh: Mesh) -> None:
    """The mesh must have exactly the axes ``("data", "model")`` with ``model`` of size 2 (one-line error)."""
    if set(mesh.axis_names) != {DATA_AXIS, MODEL_AXIS}:
        raise ValueError(f"two-tower model parallelism needs a mesh with axes ('data', 'model'); "
                         f"got {tuple(mesh.axis_names)}")
    if mesh.shape[MODEL_AXIS] != TOWERS:
        raise ValueError(f"the two-tower net needs a 'model' mesh axis of size 2 (one device per tower); "
                         f"got {mesh.shape[MODEL_AXIS]}")


def _spec_for(path: tuple, leaf: Any) -> P:
    """Tower spec of a leaf whose key path ends in ``<layer>/<kernel|bias>`` (params, optimizer traces), else P()."""
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if len(keys) >= 2 and keys[-2] in PARAM_SPECS and keys[-1] in ("kernel", "bias"):
        spec = PARAM_SPECS[keys[-2]][keys[-1]]
        if getattr(leaf, "ndim", None) == len(spec) or len(spec) == 0:
            return spec
    return P()


def tower_shardings(mesh: Mesh, tree: Any) -> Any:
    """``NamedSharding`` per leaf of ``tree`` (variables, params, a TrainState, optax state): towers over ``model``."""
    return jax.tree_util.tree_map_with_path(lambda p, x: NamedSharding(mesh, _spec_for(p, x)), tree)


def to_tower_layout(tree: Any, mesh: Mesh) -> Any:
    """Standard variables / TrainState (host or device) -> the same pytree with each tower on its ``model`` slice."""
    check_mesh(mesh)
    return jax.device_put(tree, tower_shardings(mesh, tree))


def from_tower_layout(tree: Any) -> Any:
    """Tower-sharded pytree -> the standard layout as NumPy arrays (what checkpoints and ``model.apply`` read)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), tree)


def check_two_tower(model: nn.Module, params: dict | None = None) -> None:
    """``model`` must be the two-tower net (``create_model("alexnet_twotower")``); one-line error otherwise."""
    convs = getattr(model, "convs", None)
    if getattr(model, "towers", None) != TOWERS or convs is None or len(convs) != 5 or convs[0][4] != 1 \
            or any(c[4] not in (1, TOWERS) for c in convs):
        raise ValueError(f"model parallelism over towers needs the two-tower AlexNet "
                         f"(create_model('alexnet_twotower')); got {type(model).__name__} "
                         f"{getattr(model, 'arch_name', '')}".rstrip())
    if params is not None:
        missing = sorted(set(PARAM_SPECS) - set(params))
        if missing:
            raise ValueError(f"two-tower parameters lack layer(s) {', '.join(missing)}; got {sorted(params)}")


# ----------------------------------------------------------------------------
# the user-facing wrapper


class TowerParallel:
    """Runs ``alexnet_twotower`` with its towers on the ``"model"`` axis and the batch on ``"data"``.

    Args:
      model: ``create_model("alexnet_twotower", ...)`` (any ``num_classes``, dtype, dropout rate).
      mesh: a ``("data", "model")`` mesh with ``model`` of size 2 (``tower_mesh()``); default: all devices.
      layout: ``"shard_map"`` (explicit collectives) or ``"jit"`` (XLA's partitioner on sharded parameters).

    ``apply`` has ``model.apply``'s signature and results, so it drops into
    ``make_train_step`` / ``make_eval_step`` (``step_model``); the rest is the
    placement protocol (``jaxcnn.parallel.placement``), as ``DataParallel``.
    """

    def __init__(self, model: nn.Module, mesh: Mesh | None = None, layout: str = "shard_map"):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown model-parallel layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        check_two_tower(model)
        self.model = model
        self.mesh = tower_mesh() if mesh is None else mesh
        check_mesh(self.mesh)
        self.layout = layout
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))

    @property
    def data_size(self) -> int:
        return self.mesh.shape[DATA_AXIS]

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def axis_name(self) -> str | None:
        """None: the steps see global arrays (the batch's split over ``data`` is the compiler's)."""
        return None

    def step_model(self, model: nn.Module) -> "TowerParallel":
        """This placement: its ``apply`` runs ``model`` (which must be the one it was built with) tower-parallel."""
        if model is not self.model and model != self.model:
            raise ValueError("TowerParallel.step_model: the model is not the one this placement runs")
        return self

    def check_batch_size(self, global_batch: int) -> None:
        """The batch splits over the ``data`` axis (one-line error otherwise)."""
        if global_batch % self.data_size:
            raise ValueError(f"global batch {global_batch} does not divide over the mesh's 'data' axis of size "
                             f"{self.data_size}; use a multiple of {self.data_size}")

    # ------------------------------------------------------------------ the forward
    def apply(self, variables: dict, x: jax.Array, train: bool = False, rngs: dict | None = None,
              mutable: Any = False):
        """``model.apply`` computed tower-parallel: (N, H, W, 3) -> ``(logits (N, classes), features)``.

        Features are global arrays, channels sharded over ``model``. With
        ``mutable`` (as ``make_train_step`` passes) returns ``((logits, features), {})``:
        the net has no batch statistics.
        """
        size = min_input_size([(k, s, p) for _, k, s, p, _, _ in self.model.convs], self.model.ceil_mode)
        x = check_images(x, model=self.model.arch_name, min_size=size)
        self.check_batch_size(x.shape[0])
        params = variables["params"]
        check_two_tower(self.model, params)
        if self.layout == "jit":
            params = jax.tree_util.tree_map(lambda a, s: lax.with_sharding_constraint(a, s), params,
                                            tower_shardings(self.mesh, params))
            out = self.model.apply({"params": params}, x, train=train, rngs=rngs)
        else:
            dropout = train and self.model.dropout_rate > 0
            if dropout and (not rngs or "dropout" not in rngs):
                raise ValueError("train=True with dropout needs rngs={'dropout': key}")
            key = rngs["dropout"] if dropout else None
            out = self._shard_mapped(params, train, key is not None)(params, x, key)
        return (out, {}) if mutable else out

    def _shard_mapped(self, params: dict, train: bool, with_key: bool) -> Callable:
        """The model as one tower's program on every device: it exchanges activations over ``model`` itself."""
        tower = self.model.clone(tower_axis=MODEL_AXIS, batch_axis=DATA_AXIS)

        def forward(params, x, key):
            return tower.apply({"params": params}, x, train=train, rngs={"dropout": key} if with_key else None)

        param_specs = {k: PARAM_SPECS[k] for k in params}
        return jax.shard_map(forward, mesh=self.mesh, in_specs=(param_specs, P(DATA_AXIS), P() if with_key else None),
                             out_specs=(P(DATA_AXIS), _FEATURE_SPECS))

    # ------------------------------------------------------------------ placement
    def put_state(self, state: Any) -> Any:
        """Variables or a TrainState (host or device) -> towers on their ``model`` slices, the rest replicated."""
        return jax.device_put(state, tower_shardings(self.mesh, state))

    put_variables = put_state

    def host_state(self, state: Any) -> Any:
        """Device state -> the standard layout as NumPy arrays."""
        return from_tower_layout(state)

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of the global batch -> device arrays split over ``data``."""
        return jax.tree_util.tree_map(
            lambda a: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(a)), local_batch)

    def prefetch(self, batches, size: int = 2):
        """Device batches ``size`` ahead of the consumer (as ``DataParallel.prefetch``)."""
        return prefetch_to_device(batches, self.put_batch, size)

    def unreplicate(self, state: Any) -> Any:
        """The state as global (tower-sharded) arrays: what checkpoints and evaluation take."""
        return state

    # ------------------------------------------------------------------ compiled functions
    def compile_forward(self, variables: Any) -> Callable:
        """``forward(variables, images) -> logits`` jitted with this layout's shardings (``variables``: the tree)."""
        sh = tower_shardings(self.mesh, variables)
        return jax.jit(lambda v, x: self.apply(v, x)[0], in_shardings=(sh, self.batch_sharding),
                       out_shardings=self.batch_sharding)

    def compile_train_step(self, step_fn: Callable, state: Any) -> Callable:
        """``step_fn(state, batch) -> (state, metrics)`` (e.g. ``make_train_step(self, tx)``) compiled, state donated.

        ``state`` (any value with the state's tree, e.g. the initial one) fixes the shardings.
        """
        sh = tower_shardings(self.mesh, state)
        return jax.jit(step_fn, in_shardings=(sh, self.batch_sharding), out_shardings=(sh, self.replicated),
                       donate_argnums=0)

    def compile_eval_step(self, eval_fn: Callable, state: Any) -> Callable:
        """``eval_fn(variables, batch) -> sums`` (e.g. ``make_eval_step(self)``) compiled.

        ``state``: a TrainState (its ``variables`` fix the shardings) or the variables themselves.
        """
        variables = getattr(state, "variables", state)
        return jax.jit(eval_fn, in_shardings=(tower_shardings(self.mesh, variables), self.batch_sharding),
                       out_shardings=self.replicated)
