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


def test_out_of_memory_halves_the_batch_until_it_fits(run_peak):
    small = measure.measure(measure.Setup("tiny_cnn", batch=8, devices=1, repeats=1, steps=1), run_peak)
    logged = []
    row = measure.measure_with_retry(measure.Setup("tiny_cnn", batch=32, devices=1, repeats=1, steps=1,
                                                   memory_limit=small["program_bytes"]), run_peak, log=logged.append)
    assert (row["requested_batch"], row["batch"], row["oom_retries"]) == (32, 8, 2)
    assert "out of memory at batch 32" in row["note"] and len(logged) == 2
    with pytest.raises(measure.OutOfMemory, match="even at batch 1"):
        measure.measure_with_retry(measure.Setup("tiny_cnn", batch=2, devices=1, repeats=1, steps=1,
                                                 memory_limit=1), run_peak, log=logged.append)


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
