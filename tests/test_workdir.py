"""A workdir is resumed only when its config matches; a finished run reports itself; rows are not repeated."""

import json
import os

import pytest

from jaxcnn import cli
from jaxcnn.training import load_config, train
from jaxcnn.training import workdir as run_dir
from jaxcnn.training.metrics_log import read_rows
from tests.tiny_model import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")


def _cfg(workdir, *overrides):
    register()
    return load_config(RECIPE).with_overrides([f"workdir={workdir}", *overrides])


def _fake_run(workdir, cfg):
    """A workdir that looks like a run of ``cfg``: its stored config and one (empty) checkpoint step."""
    os.makedirs(os.path.join(workdir, "checkpoints", "4"))
    run_dir.write_config(workdir, cfg)


def test_differences_ignore_bookkeeping_and_name_nested_fields(tmp_path):
    a = run_dir.config_dict(_cfg(tmp_path))
    b = run_dir.config_dict(_cfg(tmp_path / "elsewhere", "log_every_steps=1", "checkpoint_every_steps=2",
                                 "max_steps=3", "eval_batch_size=16", "keep_checkpoints=1"))
    assert run_dir.differences(a, b) == {}
    c = run_dir.config_dict(_cfg(tmp_path, "model_options.num_classes=12", "optimizer.learning_rate=0.5"))
    assert run_dir.differences(a, c) == {"model_options.num_classes": ("(unset)", 12),
                                         "optimizer.learning_rate": (0.05, 0.5)}


def test_another_config_is_refused_in_one_line(tmp_path):
    _fake_run(str(tmp_path), _cfg(tmp_path))
    with pytest.raises(ValueError) as e:
        run_dir.prepare(_cfg(tmp_path, "model_options.num_classes=12", "seed=3"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "model_options.num_classes (unset) -> 12" in msg and "seed 0 -> 3" in msg
    assert "another workdir" in msg and "--overwrite" in msg and "--resume" not in msg
    with pytest.raises(ValueError, match="seed 0 -> 3"):   # --resume is only for the schedule
        run_dir.prepare(_cfg(tmp_path, "seed=3"), "resume")


def test_a_changed_schedule_resumes_only_when_asked(tmp_path):
    _fake_run(str(tmp_path), _cfg(tmp_path))
    changed = _cfg(tmp_path, "epochs=3", "optimizer.learning_rate=0.1")
    with pytest.raises(ValueError, match=r"epochs 1 -> 3.*--resume to continue"):
        run_dir.prepare(changed)
    run_dir.prepare(changed, "resume")
    assert run_dir.stored_config(str(tmp_path))["epochs"] == 3     # the new schedule is now the run's
    run_dir.prepare(changed)


def test_overwrite_removes_the_run_and_only_the_run(tmp_path):
    wd = str(tmp_path)
    _fake_run(wd, _cfg(tmp_path))
    for name in ("metrics.jsonl", "learning_curves.png", "notes.txt"):
        open(os.path.join(wd, name), "w").close()
    os.makedirs(os.path.join(wd, "tensorboard"))
    run_dir.prepare(_cfg(tmp_path, "seed=3"), "overwrite")
    assert sorted(os.listdir(wd)) == ["config.json", "notes.txt"]
    assert run_dir.stored_config(wd)["seed"] == 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of 8 steps (a checkpoint every 4), finished."""
    wd = str(tmp_path_factory.mktemp("finished"))
    result = train(_cfg(wd, "max_steps=8"), progress=False)
    return wd, result


def test_rerunning_a_finished_run_reports_its_metrics_and_changes_nothing(finished, capsys):
    wd, first = finished
    before = {n: os.path.getmtime(os.path.join(wd, n)) for n in ("metrics.jsonl", "learning_curves.png")}
    capsys.readouterr()
    assert cli.main(["train", "--config", RECIPE, "--no-progress", f"workdir={wd}", "max_steps=8"]) == 0
    out = capsys.readouterr()
    assert "the run is finished (step 8 of 8)" in out.err
    top1 = 100 * first["eval"]["top1"]
    assert first["eval"]["top1"] > 0 and f"test top-1 {top1:.2f}%" in out.out, out.out
    assert {n: os.path.getmtime(os.path.join(wd, n)) for n in before} == before


def test_a_changed_config_is_refused_by_the_command(finished, capsys):
    wd, _ = finished
    assert cli.main(["train", "--config", RECIPE, "--no-progress", f"workdir={wd}", "max_steps=8",
                     "optimizer.momentum=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.momentum 0.9 -> 0.5" in err and len(err.strip().splitlines()) == 1


def test_a_class_count_other_than_the_data_sets_is_refused(finished, tmp_path, capsys):
    wd, _ = finished
    for workdir in (wd, str(tmp_path / "fresh")):      # resuming, and a fresh run
        assert cli.main(["train", "--config", RECIPE, "--no-progress", f"workdir={workdir}", "max_steps=8",
                         "model_options.num_classes=12"]) == 2
        err = capsys.readouterr().err
        assert "model_options.num_classes=12 but digits has 10 classes" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "fresh" / "checkpoints")


def test_resume_drops_rows_past_the_checkpoint(tmp_path):
    wd = str(tmp_path)
    train(_cfg(wd, "max_steps=8"), progress=False)
    path = os.path.join(wd, "metrics.jsonl")
    # rows a killed run wrote after its last checkpoint (step 8): they will be computed again
    with open(path, "a") as f:
        f.write(json.dumps({"step": 12, "train/loss": -1.0}) + "\n" + '{"step": 1')   # and a line cut short
    result = train(_cfg(wd, "max_steps=16"), progress=False)
    assert result["step"] == 16
    rows = read_rows(path)
    keys = [(r["step"], tuple(sorted(r))) for r in rows]
    assert len(keys) == len(set(keys)), keys
    assert all(r.get("train/loss", 0) >= 0 for r in rows)
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8, 12, 16]
