"""Bad input to the command line: one line on stderr, exit status 2, and nothing computed first.

Wrong-typed config overrides, overrides mixed with options, unwritable output directories, and a
model whose classes are not the data set's.
"""

import functools

import pytest

from jaxcnn import cli
from jaxcnn.models import registry
from tests.tiny_model import TinyCNN, register


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _no_work(*_, **__):
    raise AssertionError("the work started before the input was checked")


@pytest.mark.parametrize("override, message", [
    ("epochs=abc", "config field epochs takes float, got 'abc'"),
    ("batch_size=abc", "config field batch_size takes int, got 'abc'"),
    ("batch_size=3.5", "config field batch_size takes int, got '3.5'"),
    ("optimizer.learning_rate=fast", "config field optimizer.learning_rate takes float, got 'fast'"),
    ("max_steps=many", "config field max_steps takes int | None, got 'many'"),
    ("augment_flip=maybe", "config field augment_flip takes bool, got 'maybe'"),
    ("epochs.x=1", "config field epochs is a float; it has no field 'x'"),
    ("optimizer=1", "config field optimizer is a group; set its fields: optimizer.name, optimizer.learning_rate"),
])
def test_wrong_typed_overrides_are_one_line(override, message, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("jaxcnn.training.train", _no_work)
    assert cli.main(["train", "--no-progress", override, f"workdir={tmp_path}"]) == 2
    err = _one_line(capsys)
    assert err.startswith("jaxcnn train: error:") and message in err


def test_well_typed_overrides_still_apply():
    from jaxcnn.training import TrainConfig
    cfg = TrainConfig().with_overrides(["epochs=2.5", "augment_flip=true", "dataset=digits", "max_steps=None",
                                        "optimizer.decay_epochs=[1, 2]", "model_options.num_classes=12",
                                        "optimizer.schedule='step'", "data_dir=/data/x"])
    assert (cfg.epochs, cfg.augment_flip, cfg.max_steps, cfg.data_dir) == (2.5, True, None, "/data/x")
    assert cfg.optimizer.decay_epochs == (1, 2) and cfg.optimizer.schedule == "step"
    assert cfg.model_options == {"num_classes": 12}


def test_train_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "config fields" in out
    for field in ("epochs: float", "batch_size: int", "max_steps: int | None", "optimizer.learning_rate: float",
                  "model_options: dict"):
        assert field in out
    assert "= 'resnet18'" in out and "= 64" in out     # the default run's values


def test_overrides_and_options_mix_in_any_order(monkeypatch, tmp_path, capsys):
    from jaxcnn.cli.main import parse_args
    args = parse_args(["train", "a=1", "--no-progress", "b=2", "--config", "x.py", "c=3"])
    assert args.overrides == ["a=1", "b=2", "c=3"] and args.no_progress and args.config == "x.py"
    monkeypatch.setattr("jaxcnn.training.train", _no_work)
    assert cli.main(["train", f"workdir={tmp_path}", "--no-progress", "bogus=2"]) == 2
    assert "unknown config field 'bogus'" in _one_line(capsys)      # the override after the option was read
    with pytest.raises(SystemExit):
        parse_args(["train", "a=1", "--bogus"])                        # an unknown option stays an error
    with pytest.raises(SystemExit):
        parse_args(["models", "a=1", "--family", "resnet", "b=2"])     # overrides are train's only


def test_an_unwritable_workdir_fails_before_training(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr("jaxcnn.training.train", _no_work)
    assert cli.main(["train", "--no-progress", f"workdir={blocker}/run"]) == 2
    assert f"workdir {blocker}/run is not a writable directory" in _one_line(capsys)


@pytest.mark.parametrize("command", [["attack"], ["visualize"], ["dream"], ["explain"], ["fool"],
                                     ["patch", "--target", "1"], ["style", "a.png", "b.png"]])
def test_an_unwritable_out_fails_before_the_work(command, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for module in ("attack", "dream", "explain"):
        monkeypatch.setattr(f"jaxcnn.cli.{module}.load_model", _no_work)
    assert cli.main([*command, "--out", str(blocker / "out")]) == 2
    assert f"--out {blocker}/out is not a writable directory" in _one_line(capsys)


@pytest.fixture(scope="module")
def imagenet_sized():
    """A tiny CNN with 1000 outputs, as a random ImageNet model has."""
    register()
    if "tiny_cnn_1000" not in registry._REGISTRY:
        registry.register("tiny_cnn_1000", functools.partial(TinyCNN, num_classes=1000), family="tiny",
                          resolution=16)
    return "tiny_cnn_1000"


@pytest.mark.parametrize("command", [["attack", "--dataset", "digits", "--limit", "8"],
                                     ["patch", "--target", "1", "--limit", "8", "--steps", "1"]])
def test_a_model_whose_classes_are_not_the_data_sets_is_refused(command, imagenet_sized, tmp_path, capsys):
    assert cli.main([*command, "--model", imagenet_sized, "--out", str(tmp_path)]) == 2
    err = _one_line(capsys)                          # refused before random weights are drawn (no note)
    assert "tiny_cnn_1000 (random weights) scores 1000 classes but digits has 10" in err
    assert "--checkpoint of a run trained on digits, or --weights of a model with 10 classes" in err
