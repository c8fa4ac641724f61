"""The benchmarks package: every module imports without torch and without running anything, the harness
names and fills its results, two CPU probes run end to end at the smallest sizes, and the GPU check's
train-step agreement tells the same step from a different one."""

import importlib
import json
import pkgutil

import pytest

import benchmarks
import benchmarks.cpu
from benchmarks import harness
from jaxcnn.cpu import build

TORCH_ONLY = {"benchmarks.torch_loops"}     # the PyTorch worker's loops: imported only in that worker


def _modules():
    for package in (benchmarks, benchmarks.cpu):
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg:
                yield f"{package.__name__}.{info.name}"


def test_every_benchmark_module_imports_without_running(capsys):
    names = sorted(set(_modules()) - TORCH_ONLY)
    assert {"benchmarks.harness", "benchmarks.vs_torch", "benchmarks.cpu.conv_layers",
            "benchmarks.cpu.winograd"} <= set(names)
    for name in names:
        module = importlib.import_module(name)
        if name not in ("benchmarks.harness", "benchmarks.worker", "benchmarks.inputopt_loops"):
            assert callable(module.main), name
    assert capsys.readouterr().out == ""      # nothing ran at import


def test_timing_and_result_names():
    t = harness.interleaved({"a": lambda: None, "b": lambda: sum(range(1000))}, repeats=3, warmup=1)
    assert set(t) == {"a", "b"} and all(len(v.runs) == 3 and v.median >= 0 and v.spread >= 0 for v in t.values())
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        harness.time_call(lambda: None, 0)
    path = harness.result_path("conv_layers")
    assert path.startswith(harness.RESULTS) and path.endswith(f"conv_layers.{harness.machine_tag()}.json")
    assert harness.machine_tag("NVIDIA H200").endswith("-nvidia-h200")
    assert harness.machine_tag("cpu") == harness.machine_tag()
    assert harness.recorded(["--out", "x.json", "--torch-python", "/p/python", "--repeats", "2"]) == ["--repeats", "2"]


def test_torch_python_errors_are_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(harness.TORCH_PYTHON_ENV, raising=False)
    with pytest.raises(SystemExit, match="not an executable file"):
        harness.torch_python(str(tmp_path / "missing"))
    monkeypatch.setenv(harness.TORCH_PYTHON_ENV, str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match=harness.TORCH_PYTHON_ENV):
        harness.torch_python()


def _result(path):
    with open(path) as f:
        data = json.load(f)
    assert {"benchmark", "command", "machine", "versions", "settings", "rows"} <= set(data)
    assert data["machine"]["cores"] >= 1 and data["versions"]["jax"] and "--out" not in data["command"]
    return data


@pytest.mark.skipif(not build.available(), reason="oneDNN is not built")
def test_conv_layers_probe_writes_its_result(tmp_path):
    from benchmarks.cpu import conv_layers

    out = tmp_path / "conv.json"
    conv_layers.main(["--shapes", "6:4:8:3:1", "--batch", "1", "--repeats", "1", "--no-keep-heap", "--out", str(out)])
    data = _result(out)
    assert data["command"].startswith("python -m benchmarks.cpu.conv_layers --shapes 6:4:8:3:1")
    assert [r["impl"] for r in data["rows"]] == ["xla", "onednn"]
    for r in data["rows"]:
        assert r["layer"] == "6x6 3x3/1 4->8" and r["gflop"] == pytest.approx(2 * 6 * 6 * 8 * 4 * 9 / 1e9)
        assert all(r[f"{p}_gflop_s"] > 0 for p in ("forward", "input_gradient", "weight_gradient"))


@pytest.mark.skipif(not build.available(), reason="the C++ pool is not built")
def test_pool_layers_probe_writes_its_result(tmp_path):
    from benchmarks.cpu import pool_layers

    out = tmp_path / "pool.json"
    pool_layers.main(["--only", "alexnet pool2", "--batch", "1", "--repeats", "1", "--no-keep-heap", "--out", str(out)])
    (row,) = _result(out)["rows"]
    assert row["pool"] == "alexnet pool2" and row["shape"] == [1, 27, 27, 192]
    assert all(row[f"{k} ms"] > 0 for k in pool_layers.LOWERINGS)


def test_train_agreement_passes_the_same_step_and_fails_a_different_one():
    """The GPU check's train-step comparison: its dry run (the CPU's default mode against the reference) is
    within the tolerance, and a step on other labels from the same weights is not."""
    import jax
    import numpy as np

    from benchmarks import train_agreement
    from jaxcnn.models import create_model
    from jaxcnn.training.optimizer import make_optimizer
    from jaxcnn.training.state import create_train_state
    from tests import tiny_model

    tiny_model.register()
    result = train_agreement.agreement("tiny_cnn", size=16, batch=4, dry_run=True)
    (row,) = result["rows"]
    assert result["ok"] and row["within"] and all(v <= row["tolerance"][k] for k, v in row["errors"].items())
    tx = make_optimizer(train_agreement.optimizer(), 1000, 100_000)
    state = jax.device_get(create_train_state(create_model("tiny_cnn"), tx, (16, 16, 3), seed=0))
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    cpu = jax.devices("cpu")[0]
    steps = [train_agreement.one_step("tiny_cnn", cpu, state, {"image": images, "label": np.array(labels, np.int32)},
                                      16, mode="reference") for labels in ([0, 1, 2, 3], [3, 2, 1, 0])]
    errors = train_agreement.compare(*steps)
    assert errors["loss"] > 1e-3 and errors["update"] > train_agreement.TOLERANCE["update"]
