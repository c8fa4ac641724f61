"""Checkpoints: SIGKILL mid-run then resume ends bit-identical with one metrics row per step; 8 <-> 1 devices;
read-only commands create nothing. (A diverging run: tests/test_nan_stop.py.)"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxcnn import cli
from jaxcnn.parallel import DataParallel
from jaxcnn.training import Checkpointer, OptimizerConfig, create_train_state, load_config, make_optimizer, train
from jaxcnn.training.evaluation import restore_run, run_config
from jaxcnn.training.metrics_log import read_rows
from tests.tiny_model import TinyCNN, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")


def _train_cmd(workdir):
    return [sys.executable, "-m", "jaxcnn.cli", "train", "--config", RECIPE, "--no-progress", f"workdir={workdir}"]


def _leaves(workdir):
    register()
    _, _, variables = restore_run(workdir)
    return jax.tree_util.tree_leaves(jax.device_get(variables))


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    done = subprocess.run(_train_cmd(full), env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test top-1" in done.stdout

    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    ckpts = os.path.join(killed, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once a checkpoint exists, mid-run
        if os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= 8 for d in os.listdir(ckpts)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Checkpointer(ckpts, every_steps=1).latest_step()
    assert partial is not None and partial < 44  # 1433 // 32 steps in the full run
    resumed = subprocess.run(_train_cmd(killed), env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = _leaves(full), _leaves(killed)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # the resumed run repeated the steps after its checkpoint; their rows from before the kill are gone
    rows = {w: [(r["step"], tuple(sorted(r))) for r in read_rows(os.path.join(w, "metrics.jsonl"))]
            for w in (full, killed)}
    assert sorted(rows[killed]) == sorted(rows[full]), (rows[killed], rows[full])


@pytest.mark.parametrize("save_on,restore_on", [(8, 1), (1, 8)])
def test_checkpoint_moves_between_device_counts(tmp_path, save_on, restore_on):
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    state = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=3)
    src = DataParallel("jit", jax.devices()[:save_on])
    ckpt = Checkpointer(str(tmp_path), every_steps=1)
    ckpt.save(5, src.put_state(state), {"model": "tiny_cnn"}, force=True)
    ckpt.wait()
    dst = DataParallel("jit", jax.devices()[:restore_on])
    target = dst.put_state(create_train_state(TinyCNN(), tx, (16, 16, 3), seed=99))
    restored, meta = ckpt.restore(target)
    ckpt.close()
    assert meta["model"] == "tiny_cnn"
    leaf = jax.tree_util.tree_leaves(restored.params)[0]
    assert len(leaf.sharding.device_set) == restore_on
    for x, y in zip(jax.tree_util.tree_leaves(jax.device_get(restored)), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(x, np.asarray(y))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    register()
    cfg = load_config(RECIPE).with_overrides([f"workdir={tmp_path}", "max_steps=4"])
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="holds a run with another config \\(model 'tiny_cnn' -> 'resnet18'"):
        train(cfg.with_overrides(["model='resnet18'", "model_options={}"]), progress=False)


def test_read_only_commands_create_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, tmp_path / "missing"):
        with pytest.raises(ValueError, match=f"^no checkpoints in {target}"):
            run_config(str(target))
        with pytest.raises(ValueError, match=f"^no checkpoints in {target}"):
            restore_run(str(target))
        assert cli.main(["eval", str(target)]) == 2
        assert f"no checkpoints in {target}" in capsys.readouterr().err
        assert cli.main(["predict", "--checkpoint", str(target)]) == 2
        assert f"no checkpoints in {target}" in capsys.readouterr().err
    assert os.listdir(empty) == [] and not os.path.exists(tmp_path / "missing")
