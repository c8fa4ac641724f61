"""Two-tower AlexNet with its towers on a 2-wide ``model`` mesh axis (8 simulated CPU devices).

The real ``alexnet_twotower`` (its five convolutional layers as in the paper; fc6 and fc7 of 512 units
instead of 4096, 10 classes: 6M parameters instead of 60M, the same layers and shardings; the
collective checks trace the full-width net, which they never run) at its minimum input size, 63 px:
the tower-parallel forward and train step equal one device, on data=1 x model=2 and data=4 x
model=2; the towers talk only at conv3 and the fully connected layers (checked on the jaxprs and on
the compiled HLO).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxcnn
from jaxcnn.parallel.model_parallel import (PARAM_SPECS, TowerParallel, check_mesh, from_tower_layout,
                                            to_tower_layout, tower_mesh)
from jaxcnn.training import create_train_state, make_train_step

SIZE, BATCH, CLASSES, FC = 63, 8, 10, 512  # 63 px: the smallest input with a non-empty pool5
MODEL_GROUPS = "{{0,1},{2,3},{4,5},{6,7}}"  # the "model" axis of tower_mesh() on 8 devices


def _mesh(data: int) -> Mesh:
    return tower_mesh(jax.devices()[:2 * data])


@pytest.fixture(scope="module")
def setup():
    model = jaxcnn.create_model("alexnet_twotower", num_classes=CLASSES, fc_width=FC)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32),
             "label": rng.integers(0, CLASSES, BATCH).astype(np.int32)}
    tx = optax.sgd(0.01, momentum=0.9)
    state0 = jax.device_get(create_train_state(model, tx, (SIZE, SIZE, 3), seed=0))
    return model, batch, tx, state0


@pytest.fixture(scope="module")
def reference(setup):
    """One device: ``model.apply`` and one train step (dropout on)."""
    model, batch, tx, state0 = setup
    logits, feats = jax.jit(model.apply)({"params": state0.params}, batch["image"])
    state, metrics = jax.jit(make_train_step(model, tx))(state0, batch)
    return jax.device_get((logits, feats, state, metrics))


@pytest.mark.parametrize("data", [1, 4])
def test_forward_equals_one_device(setup, reference, data):
    model, batch, _, state0 = setup
    tp = TowerParallel(model, _mesh(data))
    variables = tp.put_variables({"params": state0.params})
    assert variables["params"]["conv2"]["kernel"].sharding.spec == P(None, None, None, "model")
    logits, feats = jax.jit(tp.apply)(variables, tp.put_batch(batch)["image"])
    np.testing.assert_allclose(logits, reference[0], rtol=1e-5, atol=1e-5)
    for name in ("conv1", "norm2", "conv3", "conv5", "pool5", "fc6", "fc7"):
        np.testing.assert_allclose(feats[name], reference[1][name], rtol=1e-5, atol=1e-5, err_msg=name)
    c4 = feats["conv4"]  # each device holds its tower's maps of its slice of the batch
    assert c4.sharding.shard_shape(c4.shape) == (BATCH // data, *c4.shape[1:3], 192)


def test_jit_layout_forward_equals_one_device(setup, reference):
    model, batch, _, state0 = setup
    tp = TowerParallel(model, _mesh(4), layout="jit")
    variables = {"params": state0.params}
    logits = tp.compile_forward(variables)(tp.put_variables(variables), tp.put_batch(batch)["image"])
    np.testing.assert_allclose(logits, reference[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data", [1, 4])
def test_train_step_equals_one_device(setup, reference, data):
    """Loss, gradients (through the update) and SGD-momentum state equal one device, dropout masks included."""
    model, batch, tx, state0 = setup
    _, _, ref_state, ref_metrics = reference
    tp = TowerParallel(model, _mesh(data))
    step = tp.compile_train_step(make_train_step(tp, tx), state0)
    state, metrics = step(tp.put_state(state0), tp.put_batch(batch))
    assert state.params["fc8"]["kernel"].sharding.spec == P("model", None)
    assert state.opt_state[0].trace["fc6"]["kernel"].sharding.spec == P(None, "model")  # momentum stays sharded
    state = tp.host_state(state)
    assert abs(float(metrics["loss"]) - float(ref_metrics["loss"])) <= 1e-5 * abs(float(ref_metrics["loss"]))
    flat = jax.tree_util.tree_leaves_with_path
    for (path, p), p_ref, p0, m, m_ref in zip(flat(state.params), jax.tree_util.tree_leaves(ref_state.params),
                                             jax.tree_util.tree_leaves(state0.params),
                                             jax.tree_util.tree_leaves(state.opt_state),
                                             jax.tree_util.tree_leaves(ref_state.opt_state)):
        name = jax.tree_util.keystr(path)
        np.testing.assert_allclose(p, p_ref, rtol=1e-5, atol=1e-7, err_msg=name)
        # after one step the momentum trace is the gradient: it agrees to 1e-4 of its largest entry (the
        # update p - p0 itself is below float32's resolution of p for the small conv1 gradients)
        assert np.abs(m_ref).max() > 0, name
        np.testing.assert_allclose(m, m_ref, rtol=0, atol=1e-4 * np.abs(m_ref).max(), err_msg=name)
        assert np.abs(p - p0).max() > 0 or np.abs(p_ref - p0).max() == 0, name
    assert int(state.step) == 1


def test_dropout_masks_are_the_single_device_ones(setup):
    """Train mode: the model, given the tower axis, keeps each device's block of the masks one device draws."""
    model, batch, _, state0 = setup
    key = jax.random.key(3)
    _, ref = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": key}))(
        {"params": state0.params}, batch["image"])
    tp = TowerParallel(model, _mesh(4))
    _, feats = jax.jit(lambda v, x: tp.apply(v, x, train=True, rngs={"dropout": key}))(
        tp.put_variables({"params": state0.params}), tp.put_batch(batch)["image"])
    dropped = np.asarray(ref["pre_logits"]) == 0
    assert 0.3 < dropped.mean() < 0.7   # about half the units of fc7 dropped
    np.testing.assert_array_equal(np.asarray(feats["pre_logits"]) == 0, dropped)
    np.testing.assert_allclose(feats["pre_logits"], ref["pre_logits"], rtol=1e-5, atol=1e-5)


def test_layout_round_trip_keeps_the_checkpoint(setup):
    _, _, _, state0 = setup
    mesh = _mesh(4)
    placed = to_tower_layout(state0, mesh)
    for layer, specs in PARAM_SPECS.items():
        for leaf, spec in specs.items():
            assert placed.params[layer][leaf].sharding.spec == spec
    assert placed.step.sharding.spec == P()
    back = from_tower_layout(placed)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state0)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(state0)):
        np.testing.assert_array_equal(a, b)


def test_bad_mesh_model_or_batch_fail_in_one_line(setup):
    model, batch, _, state0 = setup
    devices = np.array(jax.devices())
    with pytest.raises(ValueError, match="'model' mesh axis of size 2") as e:
        TowerParallel(model, Mesh(devices.reshape(2, 4), ("data", "model")))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"axes \('data', 'model'\)"):
        check_mesh(Mesh(devices.reshape(4, 2), ("batch", "model")))
    tp = TowerParallel(model, _mesh(4))
    with pytest.raises(ValueError, match="global batch 6 does not divide over the mesh's 'data' axis of size 4") \
            as e:
        tp.apply({"params": state0.params}, batch["image"][:6])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="two-tower AlexNet"):
        TowerParallel(jaxcnn.create_model("zfnet"), _mesh(4))
    with pytest.raises(ValueError, match="unknown model-parallel layout 'gspmd'; valid: shard_map, jit"):
        TowerParallel(model, _mesh(4), layout="gspmd")


# ----------------------------------------------------------------------------
# where the towers communicate

_COLLECTIVES = {"all_gather", "psum", "psum_invariant", "psum2", "reduce_scatter", "psum_scatter", "all_to_all",
                "ppermute", "pmax", "pmin"}


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for sub in v if isinstance(v, (list, tuple)) else [v]:
            if hasattr(sub, "eqns"):
                yield sub
            elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                yield sub.jaxpr


def _collectives(jaxpr):
    """(primitive, axes, operand shape, output var, jaxpr) of every collective, nested jaxprs included, in order."""
    out = []
    for e in jaxpr.eqns:
        if e.primitive.name in _COLLECTIVES:
            axes = e.params.get("axis_name", e.params.get("axes"))
            axes = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
            out.append((e.primitive.name, axes, tuple(e.invars[0].aval.shape), e.outvars[0], jaxpr))
        for sub in _subjaxprs(e):
            out.extend(_collectives(sub))
    return out


def _consumer(var, jaxpr):
    return next(e for e in jaxpr.eqns if any(v is var for v in e.invars))


@pytest.fixture(scope="module")
def abstract(setup):
    """The paper's full-width net (fc6, fc7 of 4096), as shapes only: traced and compiled, never run."""
    _, _, tx, _ = setup
    model = jaxcnn.create_model("alexnet_twotower", num_classes=CLASSES)
    state = jax.eval_shape(lambda: create_train_state(model, tx, (SIZE, SIZE, 3), seed=0))
    batch = {"image": jax.ShapeDtypeStruct((BATCH, SIZE, SIZE, 3), jnp.float32),
             "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
    return model, state, batch


def test_forward_communicates_only_at_conv3_and_the_fc_layers(setup, abstract):
    """The shard_map body has exactly 4 collectives, all over ``model``: all_gathers feeding conv3, fc6, fc7
    (their local kernels (3,3,256,192), (9216,2048), (4096,2048)) and the psum of fc8's partial logits. conv1,
    conv2, conv4, conv5, the LRNs and the pools are tower-local. The compiled HLO has the same 4 collectives,
    over the device pairs {0,1},{2,3},... (the ``model`` axis), and nothing over ``data``."""
    model, state, batch = abstract
    tp = TowerParallel(model, _mesh(4))
    variables = {"params": state.params}
    jaxpr = jax.make_jaxpr(lambda v, x: tp.apply(v, x)[0])(variables, batch["image"]).jaxpr
    found = _collectives(jaxpr)
    n = BATCH // 4
    assert [(c[0], c[1], c[2]) for c in found] == [
        ("all_gather", ("model",), (n, 3, 3, 128)),  # norm2/pool2 of one tower -> conv3
        ("all_gather", ("model",), (n, 4608)),  # flattened pool5 of one tower -> fc6
        ("all_gather", ("model",), (n, 2048)),  # one tower's half of fc6 -> fc7
        ("psum_invariant", ("model",), (n, CLASSES))]  # fc8: partial logits of both towers
    for (_, _, _, var, body), (prim, kernel) in zip(found[:3], [("conv_general_dilated", (3, 3, 256, 192)),
                                                                ("dot_general", (9216, 2048)),
                                                                ("dot_general", (4096, 2048))]):
        eqn = _consumer(var, body)
        assert eqn.primitive.name == prim and tuple(eqn.invars[1].aval.shape) == kernel
    assert not any(e.primitive.name == "conv_general_dilated" for e in jaxpr.eqns)  # all convs are per-tower

    hlo = tp.compile_forward(variables).lower(variables, batch["image"]).compile().as_text()
    ops = re.findall(r"= (\S+) (all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all)(?:-start)?\("
                     r".*?replica_groups=(\{\{[\d,{}]*\}\})", hlo)
    assert sorted((shape.split("{")[0], op, groups) for shape, op, groups in ops) == sorted([
        ("f32[2,3,3,256]", "all-gather", MODEL_GROUPS), ("f32[2,9216]", "all-gather", MODEL_GROUPS),
        ("f32[2,4096]", "all-gather", MODEL_GROUPS), ("f32[2,10]", "all-reduce", MODEL_GROUPS)])
    assert len(re.findall(r" (all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all)(-start)?\(",
                          hlo)) == 4


def test_train_step_moves_only_activations_between_towers(setup, abstract):
    """In the train step's jaxpr, every collective over ``model`` carries a boundary activation (or its
    cotangent: all_gather's transpose is a reduce_scatter), never a parameter; everything else is the
    gradient all-reduce over ``data`` of the tower-local parameter shards."""
    _, _, tx, _ = setup
    model, state, batch = abstract
    tp = TowerParallel(model, _mesh(4))
    jaxpr = jax.make_jaxpr(make_train_step(tp, tx))(state, batch).jaxpr
    found = _collectives(jaxpr)
    n = BATCH // 4
    over_model = sorted((c[0], c[2]) for c in found if c[1] == ("model",))
    assert over_model == sorted([
        ("all_gather", (n, 3, 3, 128)), ("all_gather", (n, 4608)), ("all_gather", (n, 2048)),
        ("psum_invariant", (n, CLASSES)),
        ("reduce_scatter", (n, 3, 3, 256)), ("reduce_scatter", (n, 9216)), ("reduce_scatter", (n, 4096))])
    local_param_shapes = set()
    for layer, specs in PARAM_SPECS.items():
        for leaf, spec in specs.items():
            shape = list(state.params[layer][leaf].shape)
            for i, ax in enumerate(spec):
                if ax == "model":
                    shape[i] //= 2
            local_param_shapes.add(tuple(shape))
    over_data = [c for c in found if c[1] != ("model",)]
    assert all(c[1] == ("data",) and c[0] == "psum_invariant" for c in over_data)
    # one all-reduce per parameter (biases are reduced as (1, ..., C) before the reshape)
    assert len(over_data) == sum(len(s) for s in PARAM_SPECS.values())
    assert {tuple(d for d in c[2] if d != 1) for c in over_data} == {
        tuple(d for d in s if d != 1) for s in local_param_shapes}


def test_jaxcnn_train_runs_the_towers_strategy(tmp_path):
    from jaxcnn.training import TrainConfig, train
    cfg = TrainConfig(model="alexnet_twotower", strategy="towers", dataset="digits", image_size=63, batch_size=16,
                      eval_batch_size=16, epochs=1, max_steps=2, workdir=str(tmp_path), log_every_steps=1,
                      checkpoint_every_steps=100, model_options={"fc_width": 256})   # small fc6/fc7: a short test
    result = train(cfg, progress=False)
    assert result["step"] == 2 and result["eval"]["loss"] > 0
    params = result["state"].params
    assert params["conv1"]["kernel"].sharding.spec[-1] == "model"      # towers stayed on their devices
    assert params["fc6"]["kernel"].shape == (9216, 256) and params["fc6"]["kernel"].sharding.spec[-1] == "model"
