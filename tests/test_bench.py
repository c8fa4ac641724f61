"""jaxcnn.bench on the tiny model: the row's fields are finite, MFU in (0, 1], a batch over an injected memory
limit is retried at half until it fits, the PyTorch side says why it cannot run where torch is absent."""

import math
import sys

import pytest

from tests import tiny_model
from jaxcnn.bench import measure, peak, timing, torch_side

FIELDS = ("images_per_s", "spread", "ms_per_step", "compile_s", "tflop_s", "peak_tflop_s", "mfu", "flop_per_image")


@pytest.fixture(scope="module")
def run_peak(tmp_path_factory):
    import os
    tiny_model.register()
    os.environ["JAXCNN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    first = peak.run_peak("float32", measure.devices_for(1))
    again = peak.run_peak("float32", measure.devices_for(1))
    assert not first["cached"] and again["cached"] and again["flop_s"] == first["flop_s"] > 0
    return first


@pytest.mark.parametrize("mode", measure.MODES)
def test_row_fields_finite_and_mfu_in_unit_interval(run_peak, mode):
    row = measure.measure_with_retry(measure.Setup("tiny_cnn", mode=mode, batch=8, devices=1, repeats=2, steps=1),
                                     run_peak)
    assert all(math.isfinite(row[k]) and row[k] >= 0 for k in FIELDS)
    assert 0 < row["mfu"] <= 1 and row["batch"] == row["requested_batch"] == 8 and row["oom_retries"] == 0
    assert row["program_bytes"] > 0 and row["size"] == 16
    factor = 3 if mode == "train" else 1
    assert row["tflop_s"] == pytest.approx(factor * row["flop_per_image"] * row["images_per_s"] / 1e12)


def test_out_of_memory_even_at_one_image_per_device_raises(run_peak):
    """(The halving 32 -> 16 -> 8 is tested through the command: tests/test_cli_bench.py.)"""
    logged = []
    with pytest.raises(measure.OutOfMemory, match="even at batch 1"):
        measure.measure_with_retry(measure.Setup("tiny_cnn", batch=2, devices=1, repeats=1, steps=1,
                                                 memory_limit=1), run_peak, log=logged.append)
    assert len(logged) == 1 and "out of memory at batch 2" in logged[0]


def test_xla_resource_exhausted_is_out_of_memory():
    import jax
    assert measure.is_resource_exhausted(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert not measure.is_resource_exhausted(ValueError("shapes differ"))


def test_torch_side_absent_is_a_reason_not_a_crash(tmp_path):
    reason = torch_side.unavailable(sys.executable)      # the suite's venv has no torch
    assert reason is None or "torch" not in sys.modules  # where torch is installed there is nothing to check
    if reason is not None:
        assert "do not import" in reason
    assert "not an executable" in torch_side.unavailable(str(tmp_path / "missing"))
    assert [v[0] for v in torch_side.variants("bfloat16", True)] == [
        "torch eager bf16", "torch channels-last bf16", "torch.compile bf16"]


def test_timing_block_counts_steps():
    calls = []
    t = timing.time_block(lambda: calls.append(1), lambda _: None, steps=3, repeats=2, warmup=1)
    assert len(calls) == 7 and len(t.runs) == 2
    with pytest.raises(ValueError):
        timing.time_block(lambda: None, lambda _: None, steps=0, repeats=1)


def test_ratios_and_table_pair_each_torch_variant_with_jaxcnns_row():
    from jaxcnn.bench import report

    jax_rows = [{"model": "m", "mode": "train", "images_per_s": 30.0}, {"model": "m", "mode": "infer", "error": "x"}]
    timed = {"batch": 8, "spread": 0.05, "ms_per_step": 400.0}
    torch_rows = [{"model": "m", "mode": "train", "variant": "torch eager", "images_per_s": 20.0, **timed},
                  {"model": "m", "mode": "train", "variant": "torch.compile", "error": "no compiler"},
                  {"model": "m", "mode": "infer", "variant": "torch eager", "images_per_s": 50.0, **timed}]
    assert report.ratios(jax_rows, torch_rows) == [{"model": "m", "mode": "train", "variant": "torch eager",
                                                    "ratio": 1.5}]
    row = {"model": "m", "mode": "train", "variant": "jaxcnn jit", "dtype": "float32", "batch": 8,
           "images_per_s": 30.0, "spread": 0.1, "ms_per_step": 266.7, "compile_s": 2.0, "tflop_s": 0.01, "mfu": 0.25,
           "program_bytes": 2**20, "device_peak_bytes": None}
    result = {"rows": [row], "torch": {"rows": torch_rows[:2]}, "ratios": report.ratios([row], torch_rows)}
    lines = report.table(result).splitlines()
    assert len(lines) == 5 and "jaxcnn jit float32" in lines[2] and "25.0%" in lines[2]
    assert lines[3].split()[:2] == ["torch", "eager"] and lines[3].endswith("1.50x")
    assert "error: no compiler" in lines[4]


def test_default_batch_is_sized_for_the_device():
    tiny_model.register()
    import types

    cpu = measure.devices_for(1)
    assert measure.default_batch("resnet18", 224, cpu) == 32     # 1.8 GFLOP/image: ~64 GFLOP per batch
    assert measure.default_batch("tiny_cnn", None, cpu) == measure.CPU_MAX_BATCH
    assert measure.default_batch("resnet18", 224, measure.devices_for(3)) == 33  # a multiple of the devices
    gpus = [types.SimpleNamespace(platform="gpu")] * 2
    assert measure.default_batch("resnet18", 224, gpus) == 2 * measure.ACCELERATOR_BATCH


def test_torch_plan_says_why_the_torch_side_cannot_run(monkeypatch, tmp_path):
    import types

    from jaxcnn.bench import machine, runner

    tpu = [types.SimpleNamespace(platform="tpu")]
    assert "JAX runs on tpu" in runner.torch_plan(runner.Options(["m"], vs_torch=True), tpu)[2]
    gpus = [types.SimpleNamespace(platform="gpu")] * 4
    assert "compare with --devices 1" in runner.torch_plan(runner.Options(["m"], vs_torch=True), gpus)[2]
    monkeypatch.setattr(machine, "bf16_native", lambda: False)
    cpu = measure.devices_for(1)
    assert "emulated" in runner.torch_plan(runner.Options(["m"], dtype="bfloat16"), cpu)[2]
    missing = str(tmp_path / "python")
    assert runner.torch_plan(runner.Options(["m"], torch_python=missing), cpu) == (
        None, None, f"{missing} is not an executable file")
    monkeypatch.setattr(torch_side, "unavailable", lambda python: None if python == "/env/python" else "no torch")
    monkeypatch.setenv(torch_side.TORCH_PYTHON_ENV, "/env/python")
    assert torch_side.find_python() == ("/env/python", None)               # this Python has none: the variable's
    assert torch_side.find_python("/given/python") == (None, "no torch")    # a given Python is the one checked
