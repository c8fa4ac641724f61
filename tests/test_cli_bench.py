"""``jaxcnn bench`` end to end on the tiny model, in process: the table, the CSV and JSON fields (present, finite,
MFU in (0, 1]), ``--vs torch`` skipped with a reason where this Python has no torch, ``--data digits`` timing the
loader and naming the bound, an out-of-memory retry through ``--memory-limit``, and one-line errors."""

import csv
import json
import math
import statistics
import sys

import pytest

from jaxcnn.bench import pipeline, torch_side
from jaxcnn.cli.main import main
from tests import tiny_model

FINITE = ("images_per_s", "spread", "ms_per_step", "compile_s", "tflop_s", "mfu")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One run of both modes with --vs torch and --data digits; (result JSON, CSV rows, stdout, stderr)."""
    tiny_model.register()
    folder = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXCNN_CACHE", str(folder / "cache"))
    mp.delenv(torch_side.TORCH_PYTHON_ENV, raising=False)
    mp.setattr(pipeline, "TARGET_S", 0.2)
    out, err = [], []
    mp.setattr(sys, "stdout", _Capture(out))
    mp.setattr(sys, "stderr", _Capture(err))
    try:
        code = main(["bench", "tiny_cnn", "--batch", "8", "--devices", "1", "--repeats", "2", "--steps", "2",
                     "--vs", "torch", "--data", "digits", "--csv", str(folder / "r.csv"), "--json",
                     str(folder / "r.json")])
    finally:
        mp.undo()
    assert code == 0, "".join(err)
    with open(folder / "r.json") as f:
        result = json.load(f)
    with open(folder / "r.csv") as f:
        rows = list(csv.DictReader(f))
    return result, rows, "".join(out), "".join(err)


class _Capture:
    def __init__(self, sink):
        self.sink = sink

    def write(self, text):
        self.sink.append(text)

    def flush(self):
        pass


def test_json_rows_are_finite_with_mfu_in_unit_interval(bench):
    result, _, _, _ = bench
    assert result["complete"] and result["command"].startswith("jaxcnn bench tiny_cnn --batch 8")
    assert result["versions"]["jax"] and result["versions"]["device"] and result["machine"]["cores"] >= 1
    assert result["peak"]["cached"] is False   # measured in the bench's own process, not read from an older one
    assert [(r["model"], r["mode"]) for r in result["rows"]] == [("tiny_cnn", "infer"), ("tiny_cnn", "train")]
    for row in result["rows"]:
        assert all(math.isfinite(row[k]) and row[k] >= 0 for k in FINITE), row
        assert 0 < row["mfu"] <= 1 and row["batch"] == 8 and row["size"] == 16 and row["steps"] == 2
        assert len(row["runs_s"]) == 2 and row["ms_per_step"] == pytest.approx(1e3 * statistics.median(row["runs_s"]))
        factor = 3 if row["mode"] == "train" else 1
        assert row["tflop_s"] == pytest.approx(factor * row["flop_per_image"] * row["images_per_s"] / 1e12)
        assert row["mfu"] == pytest.approx(row["tflop_s"] / result["peak"]["flop_s"] * 1e12)


def test_csv_carries_the_rows_command_device_and_versions(bench):
    result, rows, _, _ = bench
    assert [r["mode"] for r in rows] == ["infer", "train"]
    for r, j in zip(rows, result["rows"]):
        assert float(r["images_per_s"]) == pytest.approx(j["images_per_s"]) and 0 < float(r["mfu"]) <= 1
        assert r["command"] == result["command"] and r["device_kind"] == result["versions"]["device"]
        assert r["jax"] == result["versions"]["jax"] and r["framework"] == "jaxcnn"


def test_vs_torch_without_torch_is_skipped_with_the_reason(bench):
    result, _, out, err = bench
    if torch_side.unavailable(sys.executable) is None:
        pytest.skip("this Python has torch")
    assert "do not import" in result["torch"]["skipped"] and "--torch-python" in result["torch"]["skipped"]
    assert "torch: skipped:" in out and result["ratios"] == []


def test_data_times_the_loader_and_names_the_bound(bench):
    result, _, out, _ = bench
    (p,) = result["pipeline"]
    assert (p["source"], p["augment"], p["batch"], p["size"], p["image_shape"]) == ("digits", "shift", 8, 16,
                                                                                     [16, 16, 3])
    assert p["images_per_s"] > 0 and p["batches"] >= pipeline.MIN_BATCHES
    (b,) = result["bound"]
    train = result["rows"][1]
    assert b["headroom"] == pytest.approx(p["images_per_s"] / train["images_per_s"])
    assert b["bound"] == ("loader" if b["headroom"] < 1 else "model step") and f"the {b['bound']}" in out


def test_out_of_memory_retry_through_the_command(bench, tmp_path, capsys):
    result, _, _, _ = bench
    infer8 = result["rows"][0]["program_bytes"]
    code = main(["bench", "tiny_cnn", "--mode", "infer", "--batch", "32", "--devices", "1", "--repeats", "1",
                 "--steps", "1", "--memory-limit", str(infer8 / 2**20), "--json", str(tmp_path / "r.json")])
    assert code == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert (row["requested_batch"], row["batch"], row["oom_retries"]) == (32, 8, 2)
    captured = capsys.readouterr()
    assert "out of memory at batch 32" in captured.err and "retried with batch 16" in captured.out


@pytest.mark.parametrize("argv, message", [
    (["nosuchnet"], "unknown model 'nosuchnet'"),
    (["tiny_cnn", "--batch", "0"], "--batch must be at least 1"),
    (["tiny_cnn", "--vs", "tensorflow"], "only torch"),
    (["tiny_cnn", "--all"], "not both"),
    (["tiny_cnn", "--data", "nosuchdata"], "unknown dataset 'nosuchdata'"),
])
def test_bad_input_is_one_line_with_status_2(argv, message, capsys):
    tiny_model.register()
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxcnn bench: error:") and message in err and "\n" not in err
