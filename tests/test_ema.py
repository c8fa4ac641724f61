"""Weight EMA: the compiled update against a float64 NumPy recurrence, warm-up, every k steps, non-finite
steps, checkpoints with and without an average, the EMA's evaluation beside the raw weights, the average
selected by every command (resume with an average: tests/test_augment_resume.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.sources import digits
from jaxcnn.training import Checkpointer, OptimizerConfig, create_train_state, load_config, make_optimizer, train
from jaxcnn.training.metrics_log import read_rows
from jaxcnn.training.state import torchvision_ema_decay, variables_of
from jaxcnn.training.steps import ema_decay_at, make_train_step, with_ema
from tests.tiny_model import TinyCNN, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "tests", "recipes", "tiny_digits.py")


@pytest.fixture(scope="module")
def batches():
    src = digits("train", size=16)
    cut = lambda a, i: jnp.asarray(a[i * 16:(i + 1) * 16])  # noqa: E731
    return [{"image": cut(src.images, i), "label": cut(src.labels, i)} for i in range(6)]


def _weights(state):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves((state.params, state.batch_stats))]


@pytest.mark.parametrize("decay,every,warmup", [(0.9, 1, "none"), (0.99, 2, "tf")])
def test_ema_follows_the_float64_recurrence(batches, decay, every, warmup):
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1), 10, 100)
    state = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0, ema=True)
    step = jax.jit(with_ema(make_train_step(TinyCNN(), tx), decay, every, warmup))
    avg = _weights(state)   # the average starts as the weights
    updates = 0
    for i, batch in enumerate(batches):
        state, metrics = step(state, batch)
        assert float(metrics["finite"]) == 1
        if (i + 1) % every == 0:
            d = min(decay, (1 + updates) / (10 + updates)) if warmup == "tf" else decay
            avg = [d * a + (1 - d) * w for a, w in zip(avg, _weights(state))]
            updates += 1
        got = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves((state.ema["params"],
                                                                              state.ema["batch_stats"]))]
        for g, want in zip(got, avg):
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
    # the average moved away from the start and is not the weights
    assert not np.allclose(got[0], _weights(state)[0])


def test_tf_warmup_and_torchvision_decay():
    assert float(ema_decay_at(0.9999, 0, "tf")) == pytest.approx(0.1)
    assert float(ema_decay_at(0.9999, 90, "tf")) == pytest.approx(91 / 100)
    assert float(ema_decay_at(0.9, 10 ** 6, "tf")) == pytest.approx(0.9)
    assert float(ema_decay_at(0.9, 0, "none")) == pytest.approx(0.9)
    # torchvision's ResNet-50 recipe: --model-ema-decay 0.99998, --model-ema-steps 32, 1024 images a step, 600 epochs
    assert torchvision_ema_decay(0.99998, 1024, 32, 600) == pytest.approx(1 - 2e-5 * 1024 * 32 / 600)
    assert torchvision_ema_decay(0.5, 1024, 32, 1) == 0.0


def test_non_finite_step_leaves_the_average(batches):
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1), 10, 100)
    state = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0, ema=True)

    def bad_step(state, batch):   # weights move, but the step says it was not finite
        moved = state.replace(step=state.step + 1, params=jax.tree_util.tree_map(lambda p: p + 1, state.params))
        return moved, {"finite": jnp.float32(0)}

    new, _ = jax.jit(with_ema(bad_step, 0.5))(state, batches[0])
    for a, b in zip(jax.tree_util.tree_leaves(new.ema), jax.tree_util.tree_leaves(state.ema)):
        np.testing.assert_array_equal(a, b)


def test_variables_of_and_bad_options():
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    plain = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0)
    assert variables_of(plain) is not None and plain.ema == {}
    with pytest.raises(ValueError, match="no weight EMA"):
        variables_of(plain, ema=True)
    with_avg = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0, ema=True)
    assert set(variables_of(with_avg, ema=True)) == {"params", "batch_stats"}
    for bad, match in (((1.0,), "ema_decay"), ((0.9, 0), "ema_every"), ((0.9, 1, "timm"), "ema_warmup")):
        with pytest.raises(ValueError, match=match):
            with_ema(lambda s, b: (s, {}), *bad)


def test_checkpoints_with_and_without_an_average(tmp_path):
    tx = make_optimizer(OptimizerConfig(), 10, 100)
    plain = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0)
    avg = create_train_state(TinyCNN(), tx, (16, 16, 3), seed=0, ema=True)
    avg = avg.replace(ema=jax.tree_util.tree_map(lambda x: x + 3, avg.ema))
    ckpt = Checkpointer(str(tmp_path), every_steps=1, keep=5, asynchronous=False)
    older = {k: v for k, v in vars(plain).items() if k != "ema"}   # a state saved before the EMA field existed
    ckpt.save(1, older, {"model": "tiny_cnn"}, force=True)
    ckpt.save(2, plain, {"model": "tiny_cnn"}, force=True)
    ckpt.save(3, avg, {"model": "tiny_cnn"}, force=True)
    for step in (1, 2):
        restored, _ = ckpt.restore(avg, step)   # no average saved: a fresh one, a copy of the weights
        for a, p in zip(jax.tree_util.tree_leaves(restored.ema["params"]), jax.tree_util.tree_leaves(plain.params)):
            np.testing.assert_array_equal(a, p)
        restored, _ = ckpt.restore(plain, step)
        assert restored.ema == {}
    restored, _ = ckpt.restore(plain, 3)        # a saved average is restored even into a target without one
    for a, b in zip(jax.tree_util.tree_leaves(variables_of(restored, ema=True)),
                    jax.tree_util.tree_leaves(variables_of(avg, ema=True))):
        np.testing.assert_array_equal(a, b)
    ckpt.close()


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A tiny digits run with EMA and mixup/cutmix: (its config, ``train``'s result)."""
    register()
    opts = ["ema_decay=0.9", "ema_every=2", "ema_warmup='tf'", "mixup_alpha=0.2", "cutmix_alpha=1.0",
            "epochs=0.3", "log_every_steps=4"]
    full = load_config(RECIPE).with_overrides([f"workdir={tmp_path_factory.mktemp('ema') / 'full'}", *opts])
    return full, train(full, progress=False)


def test_run_with_ema_and_mixup_logs_ema_eval(ema_run):
    """(Stopped and resumed with these options on, a run ends bit-identical: tests/test_augment_resume.py.)"""
    full, result = ema_run
    assert {"top1", "ema_top1", "ema_loss"} <= set(result["eval"])
    rows = read_rows(os.path.join(full.workdir, "metrics.jsonl"))
    assert any("eval/ema_top1" in r for r in rows) and any("train/loss" in r for r in rows)


def test_the_average_is_selectable_for_eval_export_and_checkpoint_commands(tmp_path, capsys, ema_run):
    """``restore_run(ema=True)``, ``jaxcnn eval --ema``, ``jaxcnn export --ema`` and ``--checkpoint RUN --ema`` give
    the run's average; ``--ema`` without a run is a one-line error."""
    from jaxcnn.cli.main import main as cli_main
    from jaxcnn.training.evaluation import restore_run
    from jaxcnn.weights import load_pretrained

    cfg, result = ema_run
    run = cfg.workdir
    state = jax.device_get(result["data_parallel"].unreplicate(result["state"]))
    _, _, raw = restore_run(run)
    _, _, avg = restore_run(run, ema=True)
    for got, want in ((raw, variables_of(state)), (avg, variables_of(state, ema=True))):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(raw["params"]["fc"]["kernel"]), np.asarray(avg["params"]["fc"]["kernel"]))

    out = str(tmp_path / "avg.safetensors")
    assert cli_main(["export", run, out, "--ema"]) == 0
    _, loaded = load_pretrained("tiny_cnn", out, dropout_rate=0.1)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(avg)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(avg)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    capsys.readouterr()
    assert cli_main(["eval", run, "--ema", "--no-progress"]) == 0
    assert f"{100 * result['eval']['ema_top1']:.2f}%" in capsys.readouterr().out
    assert cli_main(["predict", "--model", "tiny_cnn", "--ema"]) == 2
    assert cli_main(["eval", "--model", "tiny_cnn", "--weights", out, "--ema", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "--ema selects a run's weight average: it needs --checkpoint" in err and "give run directories" in err
