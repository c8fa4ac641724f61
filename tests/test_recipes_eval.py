"""Recipes, overrides, the train/eval commands' errors, 10-crop and ensembles."""

import dataclasses
import glob
import math
import os
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
import jaxcnn.data.sources
from jaxcnn import cli
from jaxcnn.data.sources import ArraySource
from jaxcnn.data.tfds_sources import TFDS_DATASETS
from jaxcnn.data.transforms import make_eval_transform, make_train_transform
from jaxcnn.training import TrainConfig, load_config, train
from jaxcnn.training import evaluation
from jaxcnn.training.config import eval_size
from jaxcnn.training.optimizer import make_optimizer
from jaxcnn.training.evaluation import eval_views, evaluate_runs, predict_probs, restore_run, ten_crops
from tests.tiny_model import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "train", "*.py")))


# What the recipes' data sets hold without opening them: classes, and whether examples carry masks
RECIPE_DATA = {"digits": (10, False), "imagenet2012": (1000, False), "voc2012": (21, True),
               "oxford_iiit_pet": (TFDS_DATASETS["oxford_iiit_pet"].num_mask_classes, True)}


STRATEGIES = ("jit", "pmap", "towers", "towers_jit")   # jaxcnn.training.config: TrainConfig.strategy
FIELD_TYPES = typing.get_type_hints(TrainConfig)


def _admitted(hint) -> tuple[type, ...]:
    """The runtime types a field annotation admits (``float`` takes an int, ``str | None`` either)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(hint) for t in _admitted(a))
    return (int, float) if hint is float else (typing.get_origin(hint) or hint,)


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_is_valid(path):
    """A recipe's parts fit together: a known data set of the model's task, its classes and image size
    through the model, transforms that make examples of that size, a strategy and a schedule that exist."""
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.dataset in jaxcnn.data.sources.SOURCES and cfg.dataset in RECIPE_DATA, cfg.dataset
    classes, masks = RECIPE_DATA[cfg.dataset]
    task = jaxcnn.model_info(cfg.model).task
    assert task == ("segmentation" if masks else "classification"), (cfg.model, cfg.dataset)
    for f in dataclasses.fields(cfg):   # every field holds a value of its annotated type
        assert isinstance(getattr(cfg, f.name), _admitted(FIELD_TYPES[f.name])), (f.name, getattr(cfg, f.name))
    assert cfg.strategy in STRATEGIES and cfg.batch_size > 0 and cfg.epochs > 0
    assert cfg.batch_size % cfg.accum_steps == 0 and cfg.pretrained is None and cfg.backbone_weights is None
    make_optimizer(cfg.optimizer, steps_per_epoch=100, total_steps=100 * math.ceil(cfg.epochs))

    # the model with the recipe's options, classes and dtype, traced (not compiled) at the recipe's size
    model = jaxcnn.create_model(cfg.model, **{**cfg.model_options, "num_classes": classes, "dtype": cfg.dtype})
    x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    (logits, _), _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
    size = (cfg.image_size,) * 2
    assert logits.shape == ((1, *size, classes) if masks else (1, classes)), logits.shape

    # the training and evaluation transforms turn a photo of the data set's kind into the model's input
    hw = size if cfg.dataset == "digits" else (375, 500)
    rng = np.random.default_rng(0)
    example = {"image": rng.integers(0, 256, (*hw, 3), dtype=np.uint8),
               **({"mask": rng.integers(0, classes, hw, dtype=np.uint8)} if masks else {"label": 1})}
    train_tf = make_train_transform(cfg.augment, cfg.image_size, **cfg.augment_options)
    eval_tf = make_eval_transform(eval_size(cfg), cfg.eval_transform, **cfg.eval_options)
    for tf, hw in ((train_tf, size), (eval_tf, (eval_size(cfg),) * 2 if cfg.eval_transform != "none" else size)):
        out = tf(example, np.random.default_rng(1))
        assert out["image"].shape == (*hw, 3) and out["image"].dtype == np.uint8, (tf, out["image"].shape)
        if masks:
            assert out["mask"].shape == hw

    with open(path) as f:
        doc = f.read()
    assert f"jaxcnn train --config train/{os.path.basename(path)}" in doc, "the Run: line names another file"
    assert "Run:" in doc and ("Expected:" in doc or "Reached:" in doc) and "Source:" in doc


def test_default_recipe_is_the_default_run():
    assert load_config(os.path.join(ROOT, "train", "digits_resnet18.py")) == load_config(None)


def test_overrides():
    cfg = TrainConfig().with_overrides(["epochs=3", "optimizer.learning_rate=0.5", "model_options.dropout_rate=0.2",
                                        "workdir=/tmp/x"])
    assert cfg.epochs == 3 and cfg.optimizer.learning_rate == 0.5 and cfg.model_options == {"dropout_rate": 0.2}
    assert cfg.workdir == "/tmp/x"
    with pytest.raises(ValueError, match="unknown config field 'epoch'; valid: .*epochs"):
        TrainConfig().with_overrides(["epoch=3"])
    with pytest.raises(ValueError, match="unknown config field 'lr'; valid: name, learning_rate"):
        TrainConfig().with_overrides(["optimizer.lr=3"])
    with pytest.raises(ValueError, match="not key=value"):
        TrainConfig().with_overrides(["epochs"])


def test_train_command_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--no-progress", "bogus=1"]) == 2
    assert "unknown config field 'bogus'" in capsys.readouterr().err
    assert cli.main(["train", "--no-progress", "dataset=nope", f"workdir={tmp_path}"]) == 2
    assert "unknown dataset 'nope'; valid: digits" in capsys.readouterr().err
    assert cli.main(["train", "--no-progress", "batch_size=12", f"workdir={tmp_path}"]) == 2
    assert "does not divide over 8 devices" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "missing.py")]) == 2
    assert cli.main(["eval", str(tmp_path / "norun")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_labels_out_of_range_are_refused():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), found 0..10"):
        ArraySource(images, np.array([0, 1, 2, 10]), 10)
    with pytest.raises(ValueError, match="images must be uint8"):
        ArraySource(images.astype(np.float32), np.zeros(4, int), 10)


def test_ten_crops():
    x = np.arange(2 * 6 * 7 * 1).reshape(2, 6, 7, 1)
    c = ten_crops(x, 4)
    assert c.shape == (10, 2, 4, 4, 1)
    np.testing.assert_array_equal(c[0], x[:, :4, :4])          # top-left
    np.testing.assert_array_equal(c[3], x[:, 2:, 3:])          # bottom-right
    np.testing.assert_array_equal(c[4], x[:, 1:5, 1:5])        # center
    np.testing.assert_array_equal(c[5], x[:, :4, :4][:, :, ::-1])  # mirrored top-left
    np.testing.assert_array_equal(ten_crops(x, 4, mirror=False), c[:5])
    with pytest.raises(ValueError, match="smaller than the crop"):
        ten_crops(x, 7)


def test_ten_crop_views_follow_the_runs_augmentation():
    digits = TrainConfig()                      # shift policy, no flips
    v = eval_views(digits, ten_crop=True)
    assert (v.count, v.pad, v.mirror) == (5, 2, False)
    assert v.description.startswith("5 crops") and "no mirror images: the run trained without flips" in v.description
    v = eval_views(dataclasses.replace(digits, augment_flip=True), ten_crop=True)
    assert v.count == 10 and "and their mirror images" in v.description
    v = eval_views(dataclasses.replace(digits, augment_shift=0), ten_crop=True)
    assert v.count == 1 and "the whole image" in v.description
    alexnet = dataclasses.replace(digits, augment="alexnet", image_size=224, eval_transform="center")
    v = eval_views(alexnet, ten_crop=True)
    assert v.count == 10 and "central 256 px square" in v.description
    no_flip = dataclasses.replace(alexnet, augment_options={"flip": False})
    assert eval_views(no_flip, ten_crop=True).count == 5
    assert eval_views(digits).description == "whole images"      # digits are not cropped
    # a cropping policy's views come from each example resized to the central square (round(16 * 256 / 224))
    src = jaxcnn.data.sources.digits("test", size=16)
    v = eval_views(dataclasses.replace(alexnet, image_size=16), ten_crop=True)
    (images, labels), = evaluation._scored_chunks(src, v)
    assert images.shape == (len(src), 18, 18, 3) and np.array_equal(labels, src.labels)
    assert v.of(images[:3]).shape == (10, 3, 16, 16, 3)
    assert eval_views(alexnet).description == "shorter side 256, center crop 224"
    # torchvision's current recipes: train at 176, evaluate a 224 crop of the image resized to 232
    fixres = dataclasses.replace(alexnet, image_size=176, eval_image_size=224, eval_options={"resize": 232})
    assert eval_views(fixres).description == "shorter side 232, center crop 224"
    photo = {"image": np.zeros((300, 400, 3), np.uint8), "label": 0}
    assert eval_views(fixres).base(photo, None)["image"].shape == (224, 224, 3)


def test_ensemble_averages_member_probabilities(tmp_path):
    register()
    recipe = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")
    runs = []
    for seed in (1, 2):
        wd = str(tmp_path / f"run{seed}")
        train(load_config(recipe).with_overrides([f"workdir={wd}", f"seed={seed}", "max_steps=4"]), progress=False)
        runs.append(wd)
    results = evaluate_runs(runs)
    assert set(results) == {*runs, "ensemble"}
    probs, labels = [], None
    for wd in runs:
        cfg, model, variables = restore_run(wd)
        src = jaxcnn.data.sources.digits("test", size=cfg.image_size)
        probs.append(predict_probs(model, variables, src.images))
        labels = src.labels
        assert results[wd]["top1"] == pytest.approx(np.mean(probs[-1].argmax(1) == labels))
    assert results["ensemble"]["top1"] == pytest.approx(np.mean(np.mean(probs, 0).argmax(1) == labels))
    assert results[runs[0]]["views"] == "whole images"
    compiled = evaluation._probs._cache_size()
    ten = evaluate_runs(runs[:1], ten_crop=True)
    assert evaluation._probs._cache_size() == compiled     # crops of the training size: no new program
    # the digits run trained without flips: the five crops of the image padded by its shift, no mirror images
    cfg, model, variables = restore_run(runs[0])
    src = jaxcnn.data.sources.digits("test", size=cfg.image_size)
    s = cfg.augment_shift
    padded = np.pad(src.images, ((0, 0), (s, s), (s, s), (0, 0)))
    five = np.mean([predict_probs(model, variables, np.ascontiguousarray(c))
                    for c in ten_crops(padded, cfg.image_size, mirror=False)], axis=0)
    assert ten[runs[0]]["top1"] == pytest.approx(np.mean(five.argmax(1) == src.labels))
    assert ten[runs[0]]["views"].startswith("5 crops")
    assert jax.device_count() == 8


def test_eval_header_says_what_was_scored(tmp_path, capsys):
    register()
    wd = str(tmp_path)
    train(load_config(os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")).with_overrides(
        [f"workdir={wd}", "max_steps=4"]), progress=False)
    capsys.readouterr()
    assert cli.main(["eval", wd]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith("(whole images)") and "center crop" not in header, header
    assert cli.main(["eval", wd, "--ten-crop"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "(5 crops: 4 corners and center of the image padded by 2 px (no mirror images" in header, header


def test_plateau_schedule_divides_the_learning_rate_in_a_run(tmp_path):
    from jaxcnn.training.optimizer import plateau_factor
    register()
    recipe = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")
    # min_delta=1: no evaluation counts as an improvement after the first, patience 0 -> divide at epoch 2
    cfg = load_config(recipe).with_overrides([
        f"workdir={tmp_path}", "epochs=2", "optimizer.schedule='plateau'", "optimizer.plateau_patience=0",
        "optimizer.plateau_min_delta=1.0"])
    result = train(cfg, progress=False)
    state = result["data_parallel"].unreplicate(result["state"])
    assert plateau_factor(state.opt_state) == pytest.approx(0.1)
