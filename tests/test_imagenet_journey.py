"""The ImageNet journey on the fixture's real formats (``jaxcnn.data.fixture``, built once per test process by
``tests/conftest.py``): the layouts hold the same pictures and labels, ResNet-18 trains on the folder and the
tfds layouts, ``eval`` scores the runs and a weight file on both layouts and on several test sets (Kendall's tau
on a constructed case), ``attack --dataset`` and ``explain --checkpoint`` run on the folder layout."""

import functools
import json
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcnn.cli.main import main
from jaxcnn.data.fixture import CLASSES, synsets
from jaxcnn.data.sources import get_source
from jaxcnn.training import OptimizerConfig, TrainConfig, train
from jaxcnn.training import evaluation

SIZE = 16                       # the runs' image size; the evaluation crop resizes the shorter side to 18
RESIZE = round(SIZE / 0.875)


def _labels():
    order = synsets()
    return [order.index(fc.synset) for fc in CLASSES]


def test_the_layouts_hold_the_same_imagenet_pictures(imagenet_fixture, tmp_path):
    root, manifest = imagenet_fixture
    from jaxcnn.imagenet import class_names
    labels = _labels()
    assert [c["label"] for c in manifest["classes"]] == labels == [281, 967, 657, 665, 872, 892]
    assert [c["name"] for c in manifest["classes"]] == [class_names()[i] for i in labels]
    folder_train = get_source(f"folder:{root / 'ILSVRC'}", "train")
    folder_val = get_source(f"folder:{root / 'ILSVRC'}", "val")
    assert (len(folder_train), len(folder_val), folder_train.num_classes, folder_train.skipped) == (48, 24, 1000, [])
    assert sorted(set(folder_train.labels.tolist())) == sorted(labels)
    modes = {Image.open(p).mode for p in folder_train.files}
    assert modes == {"RGB", "L", "CMYK"} and any(Image.open(p).format == "PNG" for p in folder_train.files)
    assert all(300 <= max(Image.open(p).size) <= 500 for p in folder_train.files + folder_val.files)

    data_dir = str(root / "tfds")
    train_src = get_source("imagenet2012", "train", data_dir=data_dir)
    val_src = get_source("imagenet2012", "test", data_dir=data_dir)
    assert (len(train_src), len(val_src), val_src.num_classes) == (48, 24, 1000)
    # tfds's records hold the folder's validation files byte for byte, with the same labels
    by_name = {p.name: (p.read_bytes(), int(y)) for p, y in zip(folder_val.files, folder_val.labels)}
    records = [val_src.data_source[i] for i in range(len(val_src))]
    assert {r["file_name"].decode(): (r["image"], int(r["label"])) for r in records} == by_name
    real = get_source("imagenet2012_real", "test", data_dir=data_dir)
    sets = [real[i]["real_labels"] for i in range(len(real))]
    assert sorted({len(s) for s in sets}) == [0, 1, 2] and sum(len(s) > 0 for s in sets) == 18
    assert all(set(s) <= set(labels) | {282, 968, 744, 670, 759, 409} for s in sets)
    v2 = get_source("imagenet_v2", "test", data_dir=data_dir)
    assert len(v2) == 24 and re.fullmatch(r"\d+/\d\.jpeg", v2.data_source[0]["file_name"].decode())
    assert int(v2[0]["label"]) == int(v2.data_source[0]["file_name"].split(b"/")[0])
    voc = get_source("voc2012", "train", data_dir=str(root / "VOCdevkit" / "VOC2012"))
    ex = voc[0]
    assert len(voc) == 4 and ex["mask"].shape == ex["image"].shape[:2]
    assert set(np.unique(ex["mask"])) == {0, 8, 255}       # background, cat, the ignored outline
    assert "tensorflow" not in sys.modules

    with pytest.raises(ValueError, match=r"imagenet2012_real is not prepared in .*ILSVRC2012_img_val\.tar in .*"
                                         r"tfds build imagenet2012_real .*jaxcnn fixture DIR"):
        get_source("imagenet2012_real", "test", data_dir=str(tmp_path))

    from jaxcnn.data.fixture import build   # the same call writes the same files
    for d in ("a", "b"):
        build(tmp_path / d, train_per_class=1, val_per_class=1, v2_per_class=1, voc=(1, 1), tfds=False, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and p.name != "fixture.json")   # the manifest names its own folder
    assert len(files) == 6 * 3 + 2 * 2 + 2 and all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert main(["fixture", str(tmp_path / "c"), "--train-per-class", "0"]) == 2   # the command: one-line errors


def test_the_fixture_command_writes_every_layout(tmp_path, capsys):
    assert main(["fixture", str(tmp_path), "--train-per-class", "1", "--val-per-class", "1", "--v2-per-class",
                 "1"]) == 0
    out = capsys.readouterr().out
    assert f"folder:{tmp_path / 'ILSVRC'}" in out and f"--data-dir {tmp_path / 'tfds'}" in out
    assert len(get_source("imagenet_v2", "test", data_dir=str(tmp_path / "tfds"))) == 6
    assert json.loads((tmp_path / "fixture.json").read_text())["images"] == {"train": 6, "val": 6, "v2": 6,
                                                                              "voc": {"train": 12, "val": 6}}


@pytest.fixture(scope="module")
def runs(imagenet_fixture, tmp_path_factory):
    """ResNet-18 trained at 16 px, 2 steps of 16 images on the folder layout and 1 on the tfds layout."""
    root, _ = imagenet_fixture
    work = tmp_path_factory.mktemp("journey")
    out = {}
    for layout, dataset, data_dir, steps in (("folder", f"folder:{root / 'ILSVRC'}", None, 2),
                                             ("tfds", "imagenet2012", str(root / "tfds"), 1)):
        cfg = TrainConfig(model="resnet18", dataset=dataset, data_dir=data_dir, image_size=SIZE, batch_size=16,
                          eval_batch_size=24, epochs=1, max_steps=steps, augment="inception", eval_transform="center",
                          optimizer=OptimizerConfig(learning_rate=0.05, momentum=0.9, weight_decay=0.0,
                                                    warmup_epochs=0), workdir=str(work / layout),
                          log_every_steps=1, checkpoint_every_steps=100, data_workers=0)
        out[layout] = train(cfg, progress=False)
    return out


def test_resnet18_trains_on_the_folder_and_the_tfds_layouts(runs):
    for (layout, res), steps in zip(runs.items(), (2, 1)):
        rows = [json.loads(line) for line in open(res["metrics"])]
        losses = [r["train/loss"] for r in rows if "train/loss" in r]
        assert res["step"] == steps and len(losses) == steps and np.isfinite(losses).all(), layout
        assert 0.0 <= res["eval"]["top1"] <= res["eval"]["top5"] <= 1.0
        assert os.path.isdir(res["checkpoints"])


def _center(path):
    """The center policy written out with Pillow: shorter side to 18 (rounded), central 16 x 16."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = RESIZE / min(w, h)
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    left, top = (im.size[0] - SIZE) // 2, (im.size[1] - SIZE) // 2
    return np.asarray(im.crop((left, top, left + SIZE, top + SIZE)))


def _top1(capsys_text, name):
    row = next(line for line in capsys_text.splitlines() if line.startswith(name))
    return [float(v) / 100 for v in re.findall(r"([\d.]+)%", row)]


@pytest.fixture(scope="module")
def weights_file(runs, tmp_path_factory):
    """The tfds run's weights as a torchvision state dict."""
    from jaxcnn.weights import write_state_dict
    from jaxcnn.weights.torchvision import to_torch_state_dict

    _, _, variables = evaluation.restore_run(os.path.dirname(runs["tfds"]["checkpoints"]))
    path = str(tmp_path_factory.mktemp("weights") / "resnet18_fixture.safetensors")
    write_state_dict(to_torch_state_dict(variables), path)
    return path


def test_eval_of_the_runs_and_a_weight_file_on_both_layouts(runs, weights_file, imagenet_fixture, capsys):
    root, _ = imagenet_fixture
    folder_run = os.path.dirname(runs["folder"]["checkpoints"])
    tfds_run = os.path.dirname(runs["tfds"]["checkpoints"])
    # the folder run: its evaluation crop equals Pillow's resize and crop written out here, and its top-1 a count
    # over the in-memory forward of those images
    from jaxcnn.data.sources import TransformedSource
    from jaxcnn.data.transforms import make_eval_transform

    cfg, model, variables = evaluation.restore_run(folder_run)
    val = get_source(f"folder:{root / 'ILSVRC'}", "val")
    images = np.stack([_center(p) for p in val.files])
    streamed = TransformedSource(val, make_eval_transform(SIZE, cfg.eval_transform))
    np.testing.assert_array_equal(np.stack([streamed[i]["image"] for i in range(len(val))]), images)
    probs = evaluation.predict_probs(model, variables, images.astype(np.float32) / 255.0, batch=24)
    expected = np.mean(probs.argmax(-1) == val.labels)
    assert main(["eval", folder_run, "--batch-size", "24", "--no-progress"]) == 0
    assert _top1(capsys.readouterr().out, folder_run)[0] == pytest.approx(expected, abs=5e-5)
    # the weight file scores the same pictures alike from either layout
    common = ["--model", "resnet18", "--weights", weights_file, "--size", str(SIZE), "--batch-size", "24",
              "--no-progress"]
    assert main(["eval", *common, "--dataset", "imagenet2012", "--data-dir", str(root / "tfds")]) == 0
    from_tfds = _top1(capsys.readouterr().out, weights_file)
    assert main(["eval", *common, "--dataset", f"folder:{root / 'ILSVRC'}"]) == 0
    assert _top1(capsys.readouterr().out, weights_file) == from_tfds
    # the tfds run and the weight file on three test sets at once: the run's data dir serves the other two
    assert main(["eval", tfds_run, *common, "--dataset", "imagenet2012", "imagenet_v2", "imagenet2012_real"]) == 0
    out = capsys.readouterr().out
    assert "imagenet_v2 (24 images)" in out and "ReaL: 18 of 24 images have ReaL labels" in out
    assert out.count("Kendall's tau of the 2 models' top-1 ranking") == 2 and "drop 3" in out


@functools.cache
def _resnet18_state():
    from jaxcnn import create_model, init_variables
    from jaxcnn.weights.torchvision import to_torch_state_dict

    return to_torch_state_dict(init_variables(create_model("resnet18"), SIZE))


def _constant_predictor(path, label, biases=None):
    """ResNet-18 weights whose output is ``label`` for any image: a zero classifier with a bias on ``label``
    (or the logits ``biases``, {class: value}, the others 0)."""
    from jaxcnn import write_state_dict

    state = dict(_resnet18_state())
    state["fc.weight"] = np.zeros_like(state["fc.weight"])
    state["fc.bias"] = np.zeros(1000, np.float32)
    for c, b in (biases or {label: 20.0}).items():
        state["fc.bias"][c] = b
    write_state_dict(state, path)
    return path


def test_kendall_tau_between_two_test_sets_on_a_constructed_case(imagenet_fixture, tmp_path, capsys):
    """Three models that always answer tabby, espresso or missile score each test set's share of that class:
    4/7, 2/7, 1/7 on the first and 1/6, 3/6, 2/6 on the second. The ranking a > b > c becomes b > c > a: of the
    three pairs, (b, c) keeps its order and the two with a swap, so tau = (1 - 2) / 3."""
    root, _ = imagenet_fixture
    val = get_source(f"folder:{root / 'ILSVRC'}", "val")
    tabby, espresso, missile = (CLASSES[i].synset for i in range(3))
    sets = {"one": {tabby: 4, espresso: 2, missile: 1}, "two": {tabby: 1, espresso: 3, missile: 2}}
    for name, counts in sets.items():
        for s in synsets():
            (tmp_path / name / "val" / s).mkdir(parents=True)
        for s, n in counts.items():
            for p in [p for p in val.files if p.parent.name == s][:n]:
                os.link(p, tmp_path / name / "val" / s / p.name)
    labels = _labels()
    weights = []
    for k in range(3):
        weights += ["--weights", _constant_predictor(str(tmp_path / f"always{k}.safetensors"), labels[k])]
    assert main(["eval", "--model", "resnet18", *weights, "--size", str(SIZE), "--batch-size", "24", "--no-progress",
                 "--dataset", f"folder:{tmp_path / 'one'}", f"folder:{tmp_path / 'two'}"]) == 0
    out = capsys.readouterr().out
    comparison = out[out.index("drop 2"):]
    for k, (a, b) in enumerate(((4 / 7, 1 / 6), (2 / 7, 3 / 6), (1 / 7, 2 / 6))):
        row = next(line for line in comparison.splitlines() if f"always{k}.safetensors" in line)
        got = [float(v) for v in re.findall(r"-?\d+\.\d+", row.split(".safetensors", 1)[1])]
        assert got == pytest.approx([100 * a, 100 * b, 100 * (a - b)], abs=0.006), row
    tau = float(re.search(r"ranking, .* vs .*: (-?[\d.]+) \(p", out).group(1))
    assert tau == pytest.approx(-1 / 3, abs=5e-4)
    # a saturated softmax: tabby's logit 300, espresso's 250, missile's 100, the rest 0. Missile's probability
    # rounds to 0 as do the 997 others', yet it is third: top-5 is every image of the first set
    saturated = _constant_predictor(str(tmp_path / "saturated.safetensors"), None,
                                    {labels[0]: 300.0, labels[1]: 250.0, labels[2]: 100.0})
    assert main(["eval", "--model", "resnet18", "--weights", saturated, "--size", str(SIZE), "--batch-size", "24",
                 "--no-progress", "--dataset", f"folder:{tmp_path / 'one'}"]) == 0
    assert _top1(capsys.readouterr().out, saturated) == pytest.approx([4 / 7, 1.0], abs=5e-5)
    # bad input, each one line: ten crops of images resized below the crop, weights of another class count or
    # of another model for a training run
    assert main(["eval", "--model", "resnet18", "--weights", weights[1], "--size", str(SIZE), "--resize", "12",
                 "--ten-crop", "--dataset", f"folder:{tmp_path / 'one'}"]) == 2
    err = capsys.readouterr().err
    assert "--ten-crop: images resized to 12 px are smaller than the crop 16" in err and err.count("\n") == 1
    for weights_path, message in ((weights[1], r"pretrained=.*always0\.safetensors \(resnet18\) scores 1000 classes "
                                                r"but digits has 10"),
                                  (_alexnet(tmp_path), r"pretrained=.*alexnet\.safetensors is not a resnet18 weight "
                                                       r"file: .*does not fit resnet")):
        assert main(["train", f"pretrained={weights_path}", f"workdir={tmp_path / 'run'}"]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and err.count("\n") == 1, err


def _alexnet(tmp_path):
    """A weight file with AlexNet's first keys and shapes (none of ResNet-18's)."""
    from jaxcnn import write_state_dict

    path = str(tmp_path / "alexnet.safetensors")
    write_state_dict({"features.0.weight": np.zeros((64, 3, 11, 11), np.float32),
                      "features.0.bias": np.zeros(64, np.float32)}, path)
    return path


def test_attack_on_the_folder_data_set_and_explain_the_folder_run(runs, imagenet_fixture, tmp_path, capsys):
    from jaxcnn.cli.loading import dataset_source

    root, _ = imagenet_fixture
    folder_run = os.path.dirname(runs["folder"]["checkpoints"])
    member = evaluation.run_member(folder_run)
    clean = evaluation.evaluate([member], f"folder:{root / 'ILSVRC'}", batch_size=24)["members"][folder_run]["top1"]
    # 24 images in padded batches of 16: the clean row counts the 24, as eval does, image for image
    assert main(["attack", "--checkpoint", folder_run, "--dataset", f"folder:{root / 'ILSVRC'}", "--method", "fgsm",
                 "--eps", "0.03", "--batch-size", "16", "--out", str(tmp_path)]) == 0
    rows = json.load(open(tmp_path / "robustness.json"))
    assert [r["count"] for r in rows] == [24, 24] and rows[0]["accuracy"] == pytest.approx(clean, abs=1e-9)
    assert "24 images of folder:" in capsys.readouterr().out and (tmp_path / "robustness.png").is_file()
    run = evaluation.run_config(folder_run)
    six, _ = dataset_source(run.dataset, "test", SIZE, limit=6, run=run)   # spread: one image of each class
    assert sorted(int(six[i]["label"]) for i in range(6)) == sorted(_labels())
    assert main(["explain", "--checkpoint", folder_run, "--method", "top-patches", "--layer", "layer1",
                 "--channel", "0", "--limit", "6", "--k", "2", "--out", str(tmp_path)]) == 0
    assert "over 6 images" in capsys.readouterr().out


def test_a_runs_data_set_is_read_with_its_eval_options_and_real_labels_batch(imagenet_fixture):
    """``--checkpoint`` commands read the run's data set through its evaluation crop with the run's options (a
    torchvision-recipe run resizes to 232, not 224 / 0.875), and ReaL's label sets (0, 1 or several per image)
    do not stop the images and labels from batching."""
    from jaxcnn.cli.loading import dataset_batches, dataset_source
    from jaxcnn.data.sources import TransformedSource
    from jaxcnn.data.transforms import make_eval_transform

    root, _ = imagenet_fixture
    tfds_dir = str(root / "tfds")
    run = TrainConfig(dataset="imagenet2012", data_dir=tfds_dir, image_size=SIZE, eval_transform="center",
                      eval_options={"resize": 2 * SIZE})
    src, _ = dataset_source("imagenet2012", "validation", SIZE, run=run)
    raw = get_source("imagenet2012", "validation", size=SIZE, data_dir=tfds_dir)
    crop = lambda **opts: TransformedSource(raw, make_eval_transform(SIZE, "center", **opts))[3]["image"]
    np.testing.assert_array_equal(src[3]["image"], crop(resize=2 * SIZE))
    assert not np.array_equal(src[3]["image"], crop())
    real, _ = dataset_source("imagenet2012_real", "validation", SIZE, data_dir=tfds_dir, limit=12)
    images, labels, mask = next(dataset_batches(real, 8))
    assert images.shape == (8, SIZE, SIZE, 3) and labels.shape == (8,) and mask.all()
