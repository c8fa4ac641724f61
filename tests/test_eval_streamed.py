"""Streamed ``jaxcnn eval`` of weight files on image folders: the accuracy equals the in-memory one, the
ranking comparison between test sets, and the one-line errors."""

import itertools
import os

import numpy as np
import pytest
from PIL import Image

from jaxcnn.cli.main import main as cli_main
from jaxcnn.training import evaluation
from tests.tiny_model import register
from tests.trained_digits import SIZE, digits_classifier, write_weights_and_photo


def _folder(root, images, labels):
    """``root/val/<class>/<i>.png``: the digits as an ImageFolder of lossless PNGs."""
    for i, (img, y) in enumerate(zip(images, labels)):
        d = os.path.join(root, "val", str(int(y)))
        os.makedirs(d, exist_ok=True)
        Image.fromarray((np.asarray(img) * 255).round().astype(np.uint8)).save(os.path.join(d, f"{i}.png"))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    register()
    tmp = tmp_path_factory.mktemp("eval")
    weights, _ = write_weights_and_photo(str(tmp))
    _, _, images, labels, accuracy = digits_classifier()
    whole = _folder(str(tmp / "whole"), images, labels)
    half = _folder(str(tmp / "half"), images[::2], labels[::2])
    return weights, whole, half, images, labels, accuracy


def test_streamed_top1_equals_in_memory(setup):
    weights, whole, _, images, labels, accuracy = setup
    member = evaluation.weights_member("tiny_cnn", weights, size=SIZE, resize=SIZE)
    res = evaluation.evaluate([member], f"folder:{whole}", batch_size=48)   # 360 images: a padded last batch
    (got,) = res["members"].values()
    assert res["count"] == len(labels)
    assert got["top1"] == pytest.approx(accuracy, abs=0.5 / len(labels))
    assert 0.5 < got["top1"] <= got["top5"] <= 1.0


def test_cli_two_test_sets_prints_drop_and_tau(setup, capsys):
    weights, whole, half, *_ = setup
    rc = cli_main(["eval", "--model", "tiny_cnn", "--weights", weights, "--size", str(SIZE), "--resize", str(SIZE),
                   "--dataset", f"folder:{whole}", f"folder:{half}", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and f"folder:{half}" in out and "top-1" in out
    assert "needs 2 or more models" in out   # one model: no ranking to compare


def test_kendall_tau_against_pair_count():
    a = [0.76, 0.81, 0.70, 0.64, 0.79]
    b = [0.63, 0.69, 0.60, 0.52, 0.70]
    pairs = list(itertools.combinations(range(len(a)), 2))
    s = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    tau, p = evaluation.kendall_tau(a, b)
    assert tau == pytest.approx(s / len(pairs)) and 0 <= p <= 1
    results = [{"dataset": d, "members": {f"m{i}": {"top1": x} for i, x in enumerate(v)}}
               for d, v in (("first", a), ("second", b))]
    (c,) = evaluation.compare(results)
    assert c["tau"] == pytest.approx(tau) and c["drop"]["m0"] == pytest.approx(a[0] - b[0])


def test_class_count_mismatch_is_one_line(setup, tmp_path, capsys):
    weights, *_ , images, labels, _ = setup
    three = _folder(str(tmp_path / "three"), images[:30], labels[:30] % 3)
    rc = cli_main(["eval", "--model", "tiny_cnn", "--weights", weights, "--dataset", f"folder:{three}",
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "10 classes" in err and "has 3" in err and err.count("\n") == 1


REFS = os.path.join(os.path.dirname(__file__), "data", "eval_transform_refs.npz")


def test_weights_eval_transform_matches_torchvision():
    """Resize + CenterCrop against torchvision's output stored by tests/refs/make_eval_transform_refs.py
    (Pillow bilinear on both sides: equal pixels), incl. a crop larger than the resized image (zero padding)."""
    from skimage import data

    refs = np.load(REFS)
    assert len(refs.files) == 5
    for key in refs.files:
        photo, resize, size = key.rsplit("_", 2)
        got = evaluation.torchvision_center(int(size), int(resize))({"image": getattr(data, photo)()})["image"]
        np.testing.assert_array_equal(got, refs[key], err_msg=key)


class _RealSource:
    """The digits test images as uint8 with a ReaL label set per image: none, one, or several."""

    def __init__(self, images, labels, real):
        self.images, self.labels, self.real = images, labels, real
        self.num_classes, self.name = 10, "digits-real"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": np.int32(self.labels[i]),
                evaluation.REAL_LABELS: np.asarray(self.real[i], np.int32)}


def test_real_accuracy_against_numpy(setup):
    """ReaL top-1: a hit when the prediction is in the image's set, images with an empty set left out."""
    import jax.numpy as jnp

    from tests.trained_digits import preprocess

    weights, _, _, images, labels, _ = setup
    model, variables, *_ = digits_classifier()
    pred = np.asarray(jnp.argmax(model.apply(variables, preprocess(jnp.asarray(images)))[0], -1))
    real = [[] if i % 3 == 1 else [int(y)] if i % 3 == 0 else [int((y + 1) % 10), int(pred[i])] if i % 2 == 0
            else [int((y + 1) % 10)] for i, y in enumerate(labels)]
    expected = np.mean([pred[i] in s for i, s in enumerate(real) if s])
    src = _RealSource((np.asarray(images) * 255).round().astype(np.uint8), labels, real)
    member = evaluation.weights_member("tiny_cnn", weights, size=SIZE, resize=SIZE)
    (got,) = evaluation.evaluate([member], "digits-real", source=src, batch_size=64)["members"].values()
    assert got["real_count"] == sum(1 for s in real if s)
    assert got["real"] == pytest.approx(expected, abs=1e-9)
