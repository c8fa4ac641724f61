"""Recipes, overrides, the train/eval commands' errors, 10-crop and ensembles."""

import glob
import os

import jax
import numpy as np
import pytest

import jaxcnn
import jaxcnn.data.sources
from jaxcnn import cli
from jaxcnn.data.sources import ArraySource
from jaxcnn.training import TrainConfig, load_config, train
from jaxcnn.training import evaluation
from jaxcnn.training.evaluation import evaluate_runs, predict_probs, restore_run, ten_crops
from tests.tiny_model import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "train", "*.py")))


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_is_valid(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    model = jaxcnn.create_model(cfg.model, **cfg.model_options)  # model and options exist
    assert model is not None and cfg.batch_size > 0 and cfg.epochs > 0
    with open(path) as f:
        doc = f.read()
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
    with pytest.raises(ValueError, match="unknown config field 'lr'; valid: learning_rate"):
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
    with pytest.raises(ValueError, match="smaller than the crop"):
        ten_crops(x, 7)


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
    compiled = evaluation._probs._cache_size()
    ten = evaluate_runs(runs[:1], ten_crop=True)
    assert 0.0 <= ten[runs[0]]["top1"] <= 1.0 and ten[runs[0]]["top5"] >= ten[runs[0]]["top1"]
    assert evaluation._probs._cache_size() == compiled     # ten crops of the training size: no new program
    assert jax.device_count() == 8


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
