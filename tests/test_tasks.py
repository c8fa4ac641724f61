"""The placement protocol (``placement_for`` over every strategy) and the task objects the training loop reads."""

import dataclasses
import inspect

import jax
import numpy as np
import pytest

import jaxcnn
from jaxcnn.data.shapes import shapes
from jaxcnn.parallel import PMAP_AXIS, DataParallel, Placement, TowerParallel, placement_for
from jaxcnn.parallel import placement as placements
from jaxcnn.training import Classification, Segmentation, TrainConfig, task_for
from jaxcnn.training import segmentation as seg
from jaxcnn.training.loop import train
from tests.tiny_model import TinyCNN


def test_placement_for_every_strategy():
    tiny, towers = TinyCNN(), jaxcnn.create_model("alexnet_twotower", num_classes=10, fc_width=64)
    for strategy, model, kind in [("jit", tiny, DataParallel), ("pmap", tiny, DataParallel),
                                  ("towers", towers, TowerParallel), ("towers_jit", towers, TowerParallel)]:
        p = placement_for(strategy, model)
        assert isinstance(p, kind) and isinstance(p, Placement), strategy
        assert p.num_devices == len(jax.devices())
    assert placement_for("pmap", tiny).axis_name == PMAP_AXIS and placement_for("jit", tiny).axis_name is None
    assert placement_for("jit", tiny).step_model(tiny) is tiny
    tp = placement_for("towers_jit", towers)
    assert tp.layout == "jit" and tp.step_model(towers) is tp and tp.axis_name is None
    assert tp.data_size == len(jax.devices()) // 2 and placement_for("jit", tiny).data_size == len(jax.devices())
    with pytest.raises(ValueError, match="not the one this placement runs"):
        tp.step_model(tiny)


def test_placements_share_the_compile_signatures():
    for name in ("compile_train_step", "compile_eval_step"):
        dp, tp = (list(inspect.signature(getattr(c, name)).parameters) for c in (DataParallel, TowerParallel))
        assert dp == tp == list(inspect.signature(getattr(Placement, name)).parameters), name


def test_bad_strategy_and_model_fail_in_one_line():
    with pytest.raises(ValueError, match="unknown parallel strategy 'dp'; valid: jit, pmap, towers, towers_jit"):
        placement_for("dp", TinyCNN())
    with pytest.raises(ValueError, match="two-tower AlexNet"):
        placement_for("towers", jaxcnn.create_model("zfnet"))


def test_strategy_model_options():
    assert placements.model_options("pmap", jaxcnn.model_options("resnet18")) == {"bn_axis_name": PMAP_AXIS}
    assert placements.model_options("jit", jaxcnn.model_options("resnet18")) == {}
    assert placements.model_options("pmap", jaxcnn.model_options("alexnet")) == {}   # no batch norm


def test_task_for_and_what_each_task_watches():
    assert isinstance(task_for("classification"), Classification)
    assert isinstance(task_for("segmentation"), Segmentation)
    assert (task_for("classification").watched, task_for("classification").target_key) == ("top1", "label")
    assert (task_for("segmentation").watched, task_for("segmentation").target_key) == ("miou", "mask")
    with pytest.raises(ValueError, match="unknown task 'detection'; valid: classification, segmentation"):
        task_for("detection")


def test_summaries():
    totals = {"loss": np.float64(6.0), "top1": np.float64(3.0), "top5": np.float64(4.0), "count": np.int64(4)}
    assert Classification().summarize(totals) == {"loss": 1.5, "top1": 0.75, "top5": 1.0}
    assert "count" in totals   # the caller's totals are left as they were
    confusion = np.array([[3, 1], [0, 4]])
    got = Segmentation().summarize({"loss": np.float64(4.0), "pixels": np.float64(8.0), "confusion": confusion})
    # IoU of class 0: 3 / (3 + 1 + 0), of class 1: 4 / (4 + 1); pixel accuracy 7 / 8
    assert got == pytest.approx({"loss": 0.5, "miou": (3 / 4 + 4 / 5) / 2, "pixel_acc": 7 / 8})


def test_segmentation_prepares_per_pixel_labels_and_pairs_the_augmentation():
    cfg = TrainConfig(model="fcn8s", dataset="shapes", augment_flip=True, augment_shift=3)
    task = Segmentation()
    train_src, test_src = task.prepare(cfg, shapes("train", num_examples=4), shapes("test", num_examples=4))
    ex = train_src[0]
    assert "label" in ex and "mask" not in ex and ex["label"].shape == ex["image"].shape[:2]
    with pytest.raises(ValueError, match="adversarial training is for classification models"):
        task.prepare(dataclasses.replace(cfg, adversarial={"eps": 0.03}), train_src, test_src)
    augment = task.augment(cfg, train_src)
    h, w = ex["label"].shape
    coded = {"image": np.broadcast_to(np.arange(w, dtype=np.uint8)[None, :, None], (h, w, 3)).copy(),
             "label": np.broadcast_to(np.arange(w, dtype=np.uint8)[None, :], (h, w)).copy()}
    for i in range(8):
        out = augment(coded, np.random.default_rng(i))
        inside = out["label"] != train_src.ignore_label
        np.testing.assert_array_equal(out["image"][..., 0][inside], out["label"][inside])   # moved together
        assert (out["image"][~inside] == 0).all()   # padding: zero pixels, ignore-label targets
    assert task.ignore_label(train_src) == seg.IGNORE_LABEL


def test_classification_steps_and_augmentation():
    cfg = TrainConfig()
    task = Classification()
    src = object()
    assert task.prepare(cfg, src, src) == (src, src)
    ex = {"image": np.zeros((8, 8, 3), np.uint8), "label": np.int32(3)}
    out = task.augment(cfg, src)(ex, np.random.default_rng(0))
    assert out["image"].shape == (8, 8, 3) and out["label"] == 3


def test_train_reads_as_one_path():
    """``train()`` asks the task and the placement; it names no task and no strategy itself."""
    source = inspect.getsource(train)
    for word in ("segmentation", "classification", "cfg.strategy ==", "pmap", "TowerParallel", "DataParallel",
                 "towers", "miou", "top1"):
        assert word not in source, word
