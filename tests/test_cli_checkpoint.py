"""``--checkpoint RUN``: every command takes the run's model, options, image size and data settings.

A tiny digits run trained here at 24 px (tiny_cnn's native resolution is 16, the attack command's
default model's 224), so a command that took the size from anywhere but the run would score or draw
at the wrong size.
"""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.training import load_config, train
from tests.tiny_model import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SIZE = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    register()
    wd = str(tmp_path_factory.mktemp("run") / "tiny")
    cfg = load_config(os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")).with_overrides(
        [f"workdir={wd}", f"image_size={RUN_SIZE}", "model_options.dropout_rate=0.0", "epochs=4",
         "optimizer.learning_rate=0.2", "checkpoint_every_steps=1000", "log_every_steps=1000"])
    train(cfg, progress=False)
    return wd


def _eval_top1(wd, capsys) -> float:
    assert cli.main(["eval", wd]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(wd))
    return float(re.findall(r"([\d.]+)%", row)[0]) / 100


def test_attack_scores_the_run_at_its_size_as_eval_does(run, tmp_path, capsys):
    top1 = _eval_top1(run, capsys)
    assert top1 > 0.6                     # a trained run, so the agreement below is about something
    assert cli.main(["attack", "--checkpoint", run, "--dataset", "digits", "--method", "fgsm", "--eps", "0.01",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    n = int(re.search(rf"(\d+) images of digits at {RUN_SIZE} px", out).group(1))
    clean = json.load(open(tmp_path / "robustness.json"))[0]
    assert n == 364 and clean["eps"] == 0.0
    assert clean["accuracy"] == pytest.approx(top1, abs=0.5 / n)    # the same images right, to the image


def test_picture_commands_draw_at_the_run_size_unless_told(run, tmp_path):
    assert cli.main(["visualize", "--checkpoint", run, "--classes", "3", "--steps", "2",
                     "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "class_3.png")).shape == (RUN_SIZE, RUN_SIZE, 3)
    assert cli.main(["visualize", "--checkpoint", run, "--classes", "3", "--steps", "2", "--size", "16",
                     "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "class_3.png")).shape == (16, 16, 3)   # an explicit --size wins
    photo = str(tmp_path / "seven.png")
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(photo)
    assert cli.main(["explain", photo, "--checkpoint", run, "--method", "saliency", "--out", str(tmp_path)]) == 0
    assert np.load(tmp_path / "seven_saliency.npy").shape == (RUN_SIZE, RUN_SIZE, 3)


def test_patch_and_top_patches_read_the_runs_data_set(run, tmp_path, capsys):
    assert cli.main(["patch", "--checkpoint", run, "--target", "3", "--limit", "32", "--steps", "2",
                     "--out", str(tmp_path)]) == 0
    assert json.load(open(tmp_path / "patch.json"))["images"] > 0
    assert cli.main(["explain", "--checkpoint", run, "--method", "top-patches", "--layer", "block0", "--channel",
                     "1", "--limit", "20", "--k", "2", "--out", str(tmp_path)]) == 0
    assert "over 20 images" in capsys.readouterr().out


def test_predict_takes_the_checkpoint(run, tmp_path, capsys):
    assert cli.main(["predict", "--checkpoint", run, "--top", "2"]) == 0
    assert f"tiny_cnn on 3 image(s) at {RUN_SIZE}x{RUN_SIZE}" in capsys.readouterr().out


def test_options_that_contradict_the_run_are_one_line_errors(run, tmp_path, capsys):
    assert cli.main(["attack", "--checkpoint", run, "--model", "resnet18", "--dataset", "digits",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--model resnet18 contradicts the checkpoint, a run of tiny_cnn" in err and "\n" not in err
    assert cli.main(["attack", "--checkpoint", run, "--model", "tiny_cnn", "--dataset", "digits", "--limit", "8",
                     "--eps", "0.01", "--method", "fgsm", "--out", str(tmp_path)]) == 0   # the run's own model
    capsys.readouterr()
    assert cli.main(["visualize", "--checkpoint", run, "--weights", "w.safetensors", "--out", str(tmp_path)]) == 2
    assert "give --weights or --checkpoint, not both" in capsys.readouterr().err


def test_the_run_data_set_is_read_with_the_runs_settings(run):
    from jaxcnn.cli.loading import load_dataset
    from jaxcnn.training.evaluation import run_config, run_source

    cfg = run_config(run)
    assert (cfg.model, cfg.image_size, cfg.model_options) == ("tiny_cnn", RUN_SIZE, {"dropout_rate": 0.0})
    x, y, classes = load_dataset("digits", "test", RUN_SIZE, limit=5, run=cfg)
    src = run_source(cfg, "test")
    spread = np.round(np.linspace(0, len(src) - 1, 5)).astype(int)   # --limit spreads over the split
    np.testing.assert_array_equal(x, src.images[spread].astype(np.float32) / 255.0)
    assert list(y) == list(src.labels[spread]) and classes == 10
