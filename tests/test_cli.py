"""The jaxcnn command: listing, prediction on real photos, one-line errors."""

import numpy as np
from PIL import Image

from jaxcnn import cli


def test_models_lists_params_and_flops(capsys):
    assert cli.main(["models", "resnet50", "alexnet", "--family", "alexnet"]) == 2
    assert "unknown model 'resnet50'; valid: alexnet, alexnet_twotower, zfnet" in capsys.readouterr().err
    assert cli.main(["models", "resnet50", "alexnet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert [r.split()[0] for r in rows] == ["alexnet", "resnet50"]
    assert "25,557,032" in rows[1] and "8.18" in rows[1] and rows[1].rstrip().endswith("resnet50")
    assert "61,100,840" in rows[0] and "1.43" in rows[0]


def test_predict_on_a_photo_file(tmp_path, capsys):
    from skimage import data
    path = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(path)
    assert cli.main(["predict", str(path), "--model", "resnet18", "--size", "64", "--top", "3"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(str(path)))
    probs = [float(tok.rsplit(" ", 1)[1]) for tok in line.split(": ", 1)[1].split(", ")]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert cli.main(["predict", str(bad), "--model", "resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxcnn predict: error:") and "not a readable image" in err and "\n" not in err
    assert cli.main(["predict", "--model", "fcn_resnet50"]) == 2
    assert "segmentation" in capsys.readouterr().err
    assert cli.main(["models", "--family", "nope"]) == 2
    assert cli.main(["predict", "--model", "resnet18", "--weights", str(tmp_path / "none.pth")]) == 2
    assert "weight file not found" in capsys.readouterr().err


def test_resize_and_center_crop_shapes():
    from jaxcnn.data import center_crop, resize_shorter
    img = np.random.default_rng(0).uniform(size=(300, 451, 3)).astype(np.float32)
    r = resize_shorter(img, 256)
    assert r.shape == (256, 385, 3)
    assert center_crop(r, 224).shape == (224, 224, 3)
