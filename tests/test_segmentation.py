"""Segmentation: per-pixel loss with an ignore label, confusion-matrix metrics, steps, backbone init, and
training a tiny FCN on the generated shapes data through the real loop (reaches a stated mIoU, resumes)."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import registry
from jaxcnn.data.shapes import CLASS_NAMES, IGNORE_LABEL, shapes
from jaxcnn.parallel import DataParallel
from jaxcnn.training import OptimizerConfig, TrainConfig, create_train_state, make_optimizer, train
from jaxcnn.training import segmentation as seg
from jaxcnn.training.metrics_log import read_rows
from jaxcnn.training.steps import model_input
from tests.tiny_model import TinyFCN, register_segmentation

RNG = np.random.default_rng(0)
K = 4


def _random_labels(shape, ignore_fraction=0.3):
    labels = RNG.integers(0, K, shape)
    return np.where(RNG.random(shape) < ignore_fraction, IGNORE_LABEL, labels)


# ----------------------------------------------------------------------------
# loss and metrics against NumPy written out


def test_pixel_loss_matches_numpy():
    logits = RNG.standard_normal((3, 5, 6, K)).astype(np.float32)
    labels = _random_labels((3, 5, 6))
    total, n = 0.0, 0
    for b, i, j in np.ndindex(labels.shape):
        if labels[b, i, j] != IGNORE_LABEL:
            z = logits[b, i, j].astype(np.float64)
            total += np.log(np.exp(z).sum()) - z[labels[b, i, j]]
            n += 1
    got = seg.pixel_loss(jnp.asarray(logits), jnp.asarray(labels, jnp.uint8))
    np.testing.assert_allclose(float(got), total / n, rtol=1e-5)
    assert float(seg.pixel_loss(jnp.asarray(logits), jnp.full((3, 5, 6), IGNORE_LABEL))) == 0.0  # all ignored


def test_ignored_pixels_get_no_gradient():
    logits = jnp.asarray(RNG.standard_normal((2, 4, 4, K)), jnp.float32)
    labels = jnp.asarray(_random_labels((2, 4, 4)))
    g = np.asarray(jax.grad(seg.pixel_loss)(logits, labels))
    ignored = np.asarray(labels) == IGNORE_LABEL
    assert ignored.any() and (~ignored).any()
    assert np.all(g[ignored] == 0)
    assert np.all(np.abs(g[~ignored]).sum(-1) > 0)


def test_confusion_miou_and_pixel_accuracy_match_a_loop():
    labels = _random_labels((4, 6, 5))
    labels[labels == 3] = 0                       # class 3 is never true ...
    preds = RNG.integers(0, K, labels.shape)
    preds[preds == 2] = 1                         # ... class 2 is never predicted
    pad = np.array([1, 1, 0, 1], np.float32)      # example 2 is padding
    want = np.zeros((K, K), np.int64)
    for b, i, j in np.ndindex(labels.shape):
        if pad[b] and labels[b, i, j] != IGNORE_LABEL:
            want[labels[b, i, j], preds[b, i, j]] += 1
    got = seg.confusion_matrix(jnp.asarray(preds), jnp.asarray(labels, jnp.uint8), K, mask=jnp.asarray(pad))
    np.testing.assert_array_equal(np.asarray(got), want)

    ious = []
    for k in range(K):
        inter, union = want[k, k], want[k, :].sum() + want[:, k].sum() - want[k, k]
        if union:  # classes in the truth or the prediction
            ious.append(inter / union)
    m = seg.metrics_from_confusion(want)
    np.testing.assert_allclose(m["miou"], np.mean(ious))
    np.testing.assert_allclose(m["pixel_acc"], np.trace(want) / want.sum())
    # a class in neither truth nor prediction has no IoU and does not count
    only_bg = seg.metrics_from_confusion(np.diag([5, 0, 0, 0]))
    assert only_bg["miou"] == 1.0 and np.isnan(only_bg["iou"][1:]).all()


# ----------------------------------------------------------------------------
# steps


class LinearSeg(nn.Module):
    """1x1 conv scores (no batch norm: accumulation and pmap must equal the full batch) plus an aux head."""

    num_classes: int = K

    @nn.compact
    def __call__(self, x, train: bool = False):
        logits = nn.Conv(self.num_classes, (3, 3), name="score")(x)
        aux = nn.Conv(self.num_classes, (1, 1), name="aux")(x)
        return logits, {"aux": aux}


def _seg_batch(n=8, hw=(6, 5), ignore_fraction=0.3):
    labels = _random_labels((n, *hw), ignore_fraction)
    labels[0] = IGNORE_LABEL  # examples differ a lot in how many pixels count
    return {"image": jnp.asarray(RNG.integers(0, 256, (n, *hw, 3)), jnp.uint8),
            "label": jnp.asarray(labels, jnp.uint8)}


TX = make_optimizer(OptimizerConfig(learning_rate=0.5, momentum=0.0, weight_decay=0.0, schedule="constant"), 10, 100)


def test_train_step_is_the_global_pixel_mean_under_accumulation_and_pmap():
    model, batch = LinearSeg(), _seg_batch()
    state = create_train_state(model, TX, (6, 5, 3), seed=0)
    full, m_full = jax.jit(seg.make_seg_train_step(model, TX, aux_weights={}))(state, batch)
    want = seg.pixel_loss(model.apply(state.variables, model_input(batch["image"]))[0], batch["label"])
    np.testing.assert_allclose(float(m_full["loss"]), float(want), rtol=1e-5)

    acc, m_acc = jax.jit(seg.make_seg_train_step(model, TX, aux_weights={}, accum_steps=4))(state, batch)
    dp = DataParallel("pmap")
    step = dp.compile_train_step(seg.make_seg_train_step(model, TX, aux_weights={}, axis_name="batch"))
    pm, m_pm = step(dp.put_state(state), dp.put_batch(jax.device_get(batch)))
    for other, m in ((acc, m_acc), (dp.host_state(pm), m_pm)):
        np.testing.assert_allclose(float(m["loss"]), float(m_full["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(m["pixel_acc"]), float(m_full["pixel_acc"]), rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(other.params), jax.tree_util.tree_leaves(full.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_aux_head_adds_half_its_loss():
    model, batch = LinearSeg(), _seg_batch()
    state = create_train_state(model, TX, (6, 5, 3), seed=0)
    _, m = jax.jit(seg.make_seg_train_step(model, TX))(state, batch)
    logits, feats = model.apply(state.variables, model_input(batch["image"]))
    want = seg.pixel_loss(logits, batch["label"]) + 0.5 * seg.pixel_loss(feats["aux"], batch["label"])
    np.testing.assert_allclose(float(m["loss"]), float(want), rtol=1e-5)


def test_eval_step_masks_padding_and_rejects_classification_batches():
    model = TinyFCN(num_classes=K, width=4)
    variables = create_train_state(model, TX, (16, 16, 3), seed=0).variables
    batch = _seg_batch(8, (16, 16))
    ev = jax.jit(seg.make_seg_eval_step(model))
    padded = {"image": jnp.concatenate([batch["image"][:5], batch["image"][:3]]),
              "label": jnp.concatenate([batch["label"][:5], batch["label"][:3]]),
              "mask": jnp.asarray([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)}
    a = jax.device_get(ev(variables, padded))
    b = jax.device_get(ev(variables, {k: v[:5] for k, v in batch.items()}))
    np.testing.assert_array_equal(a["confusion"], b["confusion"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    assert a["pixels"] == b["pixels"] == a["confusion"].sum()
    with pytest.raises(ValueError, match="segmentation labels must be integers of shape"):
        ev(variables, {"image": batch["image"], "label": jnp.zeros(8, jnp.int32)})


def test_paired_augmentation_moves_image_and_label_together():
    src = seg.mask_as_label(shapes("test", num_examples=4))
    ex = src[0]
    assert set(ex) == {"image", "label"} and ex["label"].shape == (32, 32)
    # an image that spells out its label (class k -> grey level 40 (k + 1)): any misalignment shows
    label = np.where(ex["label"] == IGNORE_LABEL, 0, ex["label"]).astype(np.uint8)
    label[:, :5] = 2  # not symmetric, so a flip is visible
    coded = {"image": np.repeat((40 * (label + 1))[..., None], 3, -1).astype(np.uint8), "label": label}
    aug = seg.make_seg_augment(flip=True, max_shift=3)
    outs = [aug(coded, np.random.default_rng(i)) for i in range(12)]
    for out in outs:
        valid = out["label"] != IGNORE_LABEL
        np.testing.assert_array_equal(out["image"][valid, 0], 40 * (out["label"][valid].astype(int) + 1))
        assert np.all(out["image"][~valid] == 0)  # pixels shifted in: zero image, ignored label
    assert sum((o["label"] == IGNORE_LABEL).any() for o in outs) >= 6  # most are shifted
    flips = [seg.make_seg_augment(flip=True)(coded, np.random.default_rng(i)) for i in range(12)]
    for out in flips:
        np.testing.assert_array_equal(out["image"][..., 0], 40 * (out["label"].astype(int) + 1))
    assert {np.array_equal(o["label"][:, ::-1], label) for o in flips} == {True, False}  # some flipped, some not


# ----------------------------------------------------------------------------
# the data set


def test_shapes_data_is_deterministic_and_labelled():
    a, b = shapes("train", size=24, num_examples=40), shapes("train", size=24, num_examples=20)
    np.testing.assert_array_equal(a.images[:20], b.images)  # example i does not depend on the count
    np.testing.assert_array_equal(a.masks[:20], b.masks)
    assert not np.array_equal(shapes("test", size=24, num_examples=20).images, b.images)
    assert a.num_classes == len(CLASS_NAMES) == 4 and a.ignore_label == IGNORE_LABEL and a.name == "shapes/train"
    assert set(np.unique(a.masks)) == {0, 1, 2, 3, IGNORE_LABEL}
    clean = shapes("train", size=24, num_examples=40, ignore_border=0)
    assert set(np.unique(clean.masks)) == {0, 1, 2, 3}
    # the ignore band is the outline of the shapes: ignored pixels are shape pixels without the band
    np.testing.assert_array_equal(a.masks[a.masks != IGNORE_LABEL], clean.masks[a.masks != IGNORE_LABEL])
    assert np.all(clean.masks[a.masks == IGNORE_LABEL] > 0)
    ex = a[3]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (24, 24, 3) and ex["mask"].shape == (24, 24)
    with pytest.raises(ValueError, match="unknown split"):
        shapes("val")


# ----------------------------------------------------------------------------
# initialising an FCN from its backbone's classification checkpoint


@pytest.fixture
def tiny_resnet_pair(monkeypatch):
    """A one-block-per-stage ResNet-50-like classifier and its FCN, as a BACKBONES entry."""
    from jaxcnn.models.fcn import FCNResNet
    from jaxcnn.models.resnet import ResNet
    if "tiny_resnet_1111" not in registry._REGISTRY:
        registry.register("tiny_resnet_1111", functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), bottleneck=True),
                          family="resnet", resolution=32)
    monkeypatch.setitem(seg.BACKBONES, "tiny_fcn_resnet", ("tiny_resnet_1111", seg._from_resnet))
    return FCNResNet(stage_sizes=(1, 1, 1, 1), num_classes=3), ResNet(stage_sizes=(1, 1, 1, 1), bottleneck=True)


def _shapes_of(model, hw=32):
    x = jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def test_fcn_resnet_backbone_from_a_classification_checkpoint(tiny_resnet_pair, tmp_path):
    from jaxcnn.weights.state_dict_io import write_state_dict
    from jaxcnn.weights.torchvision import to_torch_state_dict
    fcn, resnet = tiny_resnet_pair
    rng = np.random.default_rng(1)
    backbone = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), _shapes_of(resnet))
    path = str(tmp_path / "resnet.safetensors")
    write_state_dict(to_torch_state_dict(backbone), path)
    target = _shapes_of(fcn)  # leaves the backbone does not replace pass through untouched
    out = seg.load_backbone("tiny_fcn_resnet", path, target)
    for collection in ("params", "batch_stats"):
        got, want = out[collection]["backbone"], {k: v for k, v in backbone[collection].items() if k != "fc"}
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), b)
        assert out[collection]["classifier"] is target[collection]["classifier"]
    # a backbone of another depth is refused, naming the layers
    other = _shapes_of(type(resnet)(stage_sizes=(1, 1, 2, 1), bottleneck=True))
    with pytest.raises(ValueError, match="unexpected params/layer3.1") as e:
        seg.init_from_backbone("tiny_fcn_resnet", other, target)
    assert "\n" not in str(e.value)
    # FCN-8s takes vgg16 (fcn_from_vgg16), and says so when given something else
    assert seg.BACKBONES["fcn8s"][0] == "vgg16" and seg.BACKBONES["fcn_resnet50"][0] == "resnet50"
    with pytest.raises(ValueError, match="not vgg16 variables"):
        seg.init_from_backbone("fcn8s", backbone, _shapes_of(registry.create_model("fcn8s", num_classes=3)))
    with pytest.raises(ValueError, match="no known backbone"):
        seg.init_from_backbone("resnet18", backbone, target)


# ----------------------------------------------------------------------------
# end to end: the real training loop on the shapes data

MIN_MIOU = 0.6  # after 480 steps at lr 0.1, seeds 0-4: 0.64-0.83 (at lr 0.2 0.38-0.80, depending on the seed)


def test_tiny_fcn_learns_shapes_through_the_loop_and_resumes(tmp_path, monkeypatch):
    register_segmentation()
    workdir = str(tmp_path / "run")
    cfg = TrainConfig(model="tiny_fcn", dataset="shapes", image_size=32, batch_size=32, eval_batch_size=48,
                      epochs=30, augment_flip=True, augment_shift=0, workdir=workdir, checkpoint_every_steps=1000,
                      log_every_steps=16,
                      optimizer=OptimizerConfig(learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                                                schedule="cosine", warmup_epochs=0.5))
    first = train(dataclasses.replace(cfg, max_steps=240), progress=False)
    assert first["step"] == 240 and 0 < first["eval"]["miou"] < 1
    done = train(cfg, progress=False)  # resumes from the step-240 checkpoint
    assert done["step"] == 480
    ev = done["eval"]
    print(f"shapes test set: mIoU {ev['miou']:.3f}, pixel accuracy {ev['pixel_acc']:.3f}")
    assert ev["miou"] > MIN_MIOU and ev["pixel_acc"] > 0.9
    rows = read_rows(done["metrics"])
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 480  # nothing trained twice
    assert {"eval/miou", "eval/pixel_acc", "eval/loss"} <= set().union(*rows)


def _first_blocks(backbone_variables, fcn_variables):
    """A toy backbone map: tiny_cnn's conv0/bn0/conv1/bn1 into a tiny_fcn of width 8."""
    out = {c: dict(fcn_variables[c]) for c in fcn_variables}
    for c in out:
        for name in ("conv0", "bn0", "conv1", "bn1"):
            if name in out[c]:
                out[c][name] = backbone_variables[c][name]
    return out


def test_loop_initialises_the_backbone_from_backbone_weights(tmp_path, monkeypatch):
    from jaxcnn.weights.state_dict_io import write_state_dict
    from jaxcnn.weights.torchvision import to_torch_state_dict
    from tests.tiny_model import TinyCNN, register
    register()
    register_segmentation()
    monkeypatch.setitem(seg.BACKBONES, "tiny_fcn", ("tiny_cnn", _first_blocks))
    rng = np.random.default_rng(2)
    cnn = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                                 _shapes_of(TinyCNN(), 16))
    path = str(tmp_path / "tiny_cnn.safetensors")
    write_state_dict(to_torch_state_dict(cnn), path)
    cfg = TrainConfig(model="tiny_fcn", model_options={"width": 8}, dataset="shapes", image_size=32, batch_size=32,
                      epochs=1, max_steps=0, workdir=str(tmp_path / "run"), backbone_weights=path)
    params = jax.device_get(train(cfg, progress=False)["state"].params)
    np.testing.assert_array_equal(params["conv1"]["kernel"], cnn["params"]["conv1"]["kernel"])
    assert params["score"]["kernel"].shape == (1, 1, 16, 4)
    with pytest.raises(ValueError, match="not both"):
        train(dataclasses.replace(cfg, pretrained=path), progress=False)
