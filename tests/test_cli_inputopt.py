"""The input-optimisation commands end to end, on the trained digits model saved as a torchvision-style weight file."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxcnn.cli import main
from tests.trained_digits import SIZE, write_weights_and_photo


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights_and_photo(tmp_path_factory.mktemp("w"))


def _png(path):
    return np.asarray(Image.open(path))


def test_visualize_writes_one_png_per_class_and_a_grid(weights, tmp_path):
    path, _ = weights
    rc = main(["visualize", "--model", "tiny_cnn", "--weights", path, "--classes", "2,5", "--size", str(SIZE),
               "--steps", "20", "--out", str(tmp_path)])
    assert rc == 0
    assert _png(tmp_path / "class_2.png").shape == (SIZE, SIZE, 3)
    assert os.path.isfile(tmp_path / "grid.png")


def test_dream_invert_and_style_write_their_pictures(weights, tmp_path, capsys):
    path, photo = weights
    common = ["--model", "tiny_cnn", "--weights", path, "--size", str(SIZE)]
    assert main(["dream", photo, *common, "--layer", "block1", "--octaves", "2", "--steps", "3",
                 "--jitter", "1", "--out", str(tmp_path)]) == 0
    assert _png(tmp_path / "seven_dream_block1.png").shape == (SIZE, SIZE, 3)
    assert main(["invert", photo, *common, "--layer", "block0", "--steps", "30", "--out", str(tmp_path)]) == 0
    report = json.load(open(tmp_path / "invert.json"))
    assert report["seven/block0"]["distance_end"] < report["seven/block0"]["distance_start"]
    assert main(["style", photo, photo, *common, "--content-layer", "block1", "--style-layers", "block0", "block1",
                 "--steps", "5", "--out", str(tmp_path)]) == 0
    assert _png(tmp_path / "stylized.png").shape == (SIZE, SIZE, 3)


def test_bad_input_is_one_line(weights, tmp_path, capsys):
    path, photo = weights
    assert main(["dream", photo, "--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--layer", "conv9",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no layer 'conv9'; valid: block0, block1, pre_logits" in err
    assert main(["visualize", "--model", "tiny_cnn", "--weights", path, "--classes", "12", "--size", str(SIZE),
                 "--out", str(tmp_path)]) == 2
    assert "class label out of range" in capsys.readouterr().err
    assert main(["dream", "missing.png", "--model", "tiny_cnn", "--weights", path, "--out", str(tmp_path)]) == 2
    assert "image not found: missing.png" in capsys.readouterr().err
    assert main(["visualize", "--model", "resnet18", "--weights", path, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1     # a weight file for another model: one line


def test_attack_fool_and_patch_commands(weights, tmp_path, capsys):
    path, photo = weights
    common = ["--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--out", str(tmp_path)]
    assert main(["attack", photo, *common, "--eps", "0.1", "--steps", "5"]) == 0
    report = json.load(open(tmp_path / "report.json"))
    assert report["images"]["seven"]["success"] and report["images"]["seven"]["linf"] <= 0.1 + 1e-6
    assert _png(tmp_path / "side_by_side.png").ndim == 3
    assert main(["attack", *common, "--dataset", "digits", "--limit", "64", "--eps", "0.02", "0.05"]) == 0
    rows = json.load(open(tmp_path / "robustness.json"))
    assert [r["eps"] for r in rows] == [0.0, 0.02, 0.05] and rows[0]["accuracy"] > rows[-1]["accuracy"]
    assert main(["fool", *common, "--classes", "1,4", "--steps", "20", "--dataset", "digits"]) == 0
    assert json.load(open(tmp_path / "fool_gradient.json"))["noise_probe"]["threshold"] > 0
    assert main(["patch", *common, "--target", "3", "--limit", "64", "--steps", "10"]) == 0
    assert _png(tmp_path / "patch.png").shape[-1] == 3
    assert main(["attack", photo, *common, "--eps", "-1"]) == 2
    assert "epsilon must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["occlusion", "guided", "ig"])
def test_explain_writes_overlays_and_raw_maps(weights, tmp_path, method):
    path, photo = weights
    assert main(["explain", photo, "--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--method", method,
                 "--occluder", "4", "--stride", "2", "--out", str(tmp_path)]) == 0
    raw = np.load(tmp_path / f"seven_{method}.npy")
    assert raw.shape == ((7, 7) if method == "occlusion" else (SIZE, SIZE, 3))
    assert _png(tmp_path / f"seven_{method}.png").shape == (SIZE, SIZE, 3)


def test_explain_top_patches_filters_and_bad_input(weights, tmp_path, capsys):
    path, photo = weights
    common = ["--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--out", str(tmp_path)]
    assert main(["explain", *common, "--method", "top-patches", "--layer", "block0", "--channel", "2",
                 "--limit", "50", "--k", "4"]) == 0
    assert np.load(tmp_path / "top_patches_block0_2.npy").shape == (4, 7)
    assert main(["explain", *common, "--method", "filters", "--k-filters", "8", "--patches", "4000"]) == 0
    assert _png(tmp_path / "filters_vs_factorizations.png").ndim == 3
    assert main(["explain", photo, *common, "--occluder", "40"]) == 2
    assert "occluder size 40 must be in 1..16" in capsys.readouterr().err
    assert main(["explain", photo, *common, "--stride", "0"]) == 2
    assert "stride must be > 0" in capsys.readouterr().err
    assert main(["explain", photo, *common, "--method", "guided", "--layer", "fc9"]) == 2
    assert "no layer 'fc9'; valid: block0, block1, pre_logits" in capsys.readouterr().err


def test_explain_grad_cam(weights, tmp_path, capsys):
    path, photo = weights
    common = [photo, "--model", "tiny_cnn", "--weights", path, "--size", str(SIZE), "--out", str(tmp_path)]
    assert main(["explain", *common, "--method", "gradcam"]) == 0
    assert "gradcam at block1 (the last spatial layer" in capsys.readouterr().out
    assert np.load(tmp_path / "seven_gradcam.npy").shape == (SIZE // 4, SIZE // 4)      # block1's resolution
    assert main(["explain", *common, "--method", "guidedgradcam", "--layer", "block0"]) == 0
    assert np.load(tmp_path / "seven_guidedgradcam.npy").shape == (SIZE, SIZE, 3)
    assert _png(tmp_path / "seven_guidedgradcam.png").shape == (SIZE, SIZE, 3)
    assert main(["explain", *common, "--method", "gradcam", "--layer", "pre_logits"]) == 2
    assert "Grad-CAM needs a spatial (B, h, w, C) layer; pre_logits is (1, 16)" in capsys.readouterr().err
