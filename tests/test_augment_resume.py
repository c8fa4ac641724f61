"""A digits run with every recipe option on (TrivialAugmentWide, random erasing, mixup and cutmix, label
smoothing, AdamW with clipping, weight EMA), stopped and resumed in a fresh process, ends bit-identical to the
run never stopped: the host augmentation depends only on (seed, example index), the batch mixing on (seed,
step), and the optimizer's moments and the average travel in the checkpoint.

(SIGKILL mid-run and resume with the default augmentation: tests/test_checkpoint_resume.py.)"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcnn.training.evaluation import restore_run
from jaxcnn.training.metrics_log import read_rows
from tests.tiny_model import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")
OPTIONS = ("augment_options={'scale': (0.35, 1.0), 'auto_augment': 'ta_wide', 'random_erase': 0.5, "
           "'erase_value': 'random'}")
RECIPE_OPTIONS = ("mixup_alpha=0.2", "cutmix_alpha=1.0", "label_smoothing=0.1", "optimizer.name=adamw",
                  "optimizer.learning_rate=0.003", "optimizer.clip_grad_norm=1.0", "ema_decay=0.9")


def _train(workdir, max_steps):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "jaxcnn.cli", "train", "--config", RECIPE, "--no-progress", f"workdir={workdir}",
           "augment=inception", OPTIONS, f"max_steps={max_steps}", "checkpoint_every_steps=4", *RECIPE_OPTIONS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_stop_and_resume_with_every_recipe_option_is_bit_identical(tmp_path):
    full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
    _train(full, 12)
    _train(stopped, 6)
    _train(stopped, 12)   # a fresh process continues from the step-6 checkpoint
    register()
    (cfg, _, a), (_, _, b) = restore_run(full), restore_run(stopped)
    assert cfg.augment_options["auto_augment"] == "ta_wide" and cfg.optimizer.name == "adamw" and cfg.ema_decay
    a, b = (jax.tree_util.tree_leaves(jax.device_get((v, restore_run(w, ema=True)[2])))
            for v, w in ((a, full), (b, stopped)))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # the last logging window (steps 9-12) and the final evaluation saw the same batches and weights
    last = [[{k: v for k, v in r.items() if k.startswith(("train/", "eval/"))}
             for r in read_rows(os.path.join(w, "metrics.jsonl")) if r["step"] == 12] for w in (full, stopped)]
    assert len(last[0]) == 2 and last[0] == last[1]


def test_shift_policy_applies_its_options():
    """``augment=shift`` (the digits default) passes ``augment_options`` on: an option changes the pixels,
    an unknown value is a one-line error."""
    from jaxcnn.data.sources import digits
    from jaxcnn.training.config import TrainConfig
    from jaxcnn.training.tasks import Classification

    src = digits("train", 32)
    example = src[0]
    plain = Classification().augment(TrainConfig(), src)
    erased = Classification().augment(TrainConfig(augment_options={"random_erase": 1.0}), src)
    rng = lambda: np.random.default_rng((0, 0))  # noqa: E731
    assert not np.array_equal(plain(example, rng())["image"], erased(example, rng())["image"])
    with pytest.raises(ValueError, match="auto_augment"):
        Classification().augment(TrainConfig(augment_options={"auto_augment": "nope"}), src)
