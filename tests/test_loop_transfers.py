"""The accelerator path of the training loop, checked on the CPU.

* Between the sync points (a log row, an evaluation, a checkpoint) a step moves nothing from the
  devices to the host: the loop's per-step host work runs under ``jax.transfer_guard_device_to_host
  ("disallow")`` for a whole run. On a GPU or TPU that guard raises at any fetch; on the CPU, where
  arrays already live in host memory, it never fires, so the same context also counts every fetch
  that passes through Python (``jax.device_get``, ``Array._value`` and ``__array__``, which scalar
  conversions, printing and ``tolist`` use), and the count is shown to catch such fetches first.
* The train step is traced and compiled once for a run that evaluates, checkpoints, changes the
  learning rate on a plateau (the state re-placed) and averages weights (EMA).
* The prefetch depth is the config's ``prefetch_batches``.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import array as jax_array

from jaxcnn.parallel import data_parallel
from jaxcnn.training import OptimizerConfig, TrainConfig, loop, tasks, train
from jaxcnn.training.metrics_log import read_rows
from tests.tiny_model import register


def _cfg(tmp_path, **kw):
    register()
    base = dict(model="tiny_cnn", image_size=16, batch_size=128, eval_batch_size=256, epochs=1,
                log_every_steps=5, checkpoint_every_steps=5, workdir=str(tmp_path / "run"),
                optimizer=OptimizerConfig(learning_rate=0.05, schedule="constant"))
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def guarded(monkeypatch):
    """A step context: the transfer guard, and a list of the fetches made inside it."""
    fetches, inside = [], []
    value, to_array, device_get = jax_array.ArrayImpl._value, jax_array.ArrayImpl.__array__, jax.device_get

    def note(what):
        if inside:
            fetches.append(what)

    def _value(self):
        note("_value")
        return value.fget(self)

    def __array__(self, *args, **kwargs):
        note("__array__")
        return to_array(self, *args, **kwargs)

    def _device_get(x):
        note("device_get")
        return device_get(x)

    monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(_value))
    monkeypatch.setattr(jax_array.ArrayImpl, "__array__", __array__)
    monkeypatch.setattr(jax, "device_get", _device_get)

    @contextlib.contextmanager
    def context():
        inside.append(1)
        try:
            with jax.transfer_guard_device_to_host("disallow"):
                yield
        finally:
            inside.pop()

    context.fetches = fetches
    return context


def test_the_step_context_catches_fetches(guarded):
    x = jnp.arange(4.0) + 1
    for f in (lambda: jax.device_get({"a": x}), lambda: float(x[0]), lambda: str(x), lambda: bool(x[1] > 0),
              lambda: x.tolist(), lambda: np.array(x[2].__array__())):
        before = len(guarded.fetches)
        try:
            with guarded():
                f()
        except Exception as err:   # the guard itself, where the backend enforces it (not the CPU)
            assert "isallowed device-to-host" in str(err)
            continue
        assert len(guarded.fetches) > before
    before = len(guarded.fetches)
    jax.device_get(x)   # outside the context: not counted
    assert len(guarded.fetches) == before


def test_no_device_to_host_transfer_between_sync_points(tmp_path, monkeypatch, guarded):
    entered = []

    def context():
        entered.append(1)
        return guarded()

    monkeypatch.setattr(loop, "step_context", context)
    out = train(_cfg(tmp_path, max_steps=10, ema_decay=0.9), progress=False)
    assert out["step"] == 10 and len(entered) == 10 and guarded.fetches == []
    rows = [r for r in read_rows(out["metrics"]) if "train/loss" in r]
    assert [r["step"] for r in rows] == [5, 10]      # the metrics of every step arrived at the sync points
    assert all(r["images_per_s"] > 0 and r["tflop_s"] > 0 for r in rows)


def test_train_step_compiled_once_for_a_run(tmp_path, monkeypatch):
    traces, compiled = [], []
    step_of = tasks.Classification.train_step

    def counting_step(self, *args):
        fn = step_of(self, *args)

        def traced(state, batch):
            traces.append(1)      # runs when jax traces the step, not when it executes
            return fn(state, batch)
        return traced

    compile_of = data_parallel.DataParallel.compile_train_step

    def keep(self, fn, state=None):
        compiled.append(compile_of(self, fn, state))
        return compiled[-1]

    monkeypatch.setattr(tasks.Classification, "train_step", counting_step)
    monkeypatch.setattr(data_parallel.DataParallel, "compile_train_step", keep)
    # 3 epochs of 11 steps; a plateau that fires at the second evaluation (no improvement counts)
    opt = OptimizerConfig(learning_rate=0.05, schedule="plateau", plateau_patience=0, plateau_min_delta=1.0)
    out = train(_cfg(tmp_path, epochs=3, optimizer=opt, ema_decay=0.9), progress=False)
    lr = [r["lr_factor"] for r in read_rows(out["metrics"]) if "lr_factor" in r]
    assert out["step"] == 33 and min(lr) < 1.0 == max(lr)   # the plateau did re-place the state
    assert len(traces) == 1 and len(compiled) == 1
    assert compiled[0]._cache_size() == 1


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_depth_is_the_config(tmp_path, monkeypatch, depth):
    seen = []
    prefetch = data_parallel.DataParallel.prefetch

    def spy(self, batches, size=2):
        seen.append(size)
        return prefetch(self, batches, size)

    monkeypatch.setattr(data_parallel.DataParallel, "prefetch", spy)
    assert train(_cfg(tmp_path, max_steps=2, prefetch_batches=depth), progress=False)["step"] == 2
    assert seen == [depth]
    with pytest.raises(ValueError, match="prefetch_batches must be >= 1"):
        train(_cfg(tmp_path / "bad", max_steps=2, prefetch_batches=0), progress=False)
