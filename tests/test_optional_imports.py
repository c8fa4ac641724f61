"""What a machine without tensorflow-datasets, grain, tensorboardX or safetensors can still do: import jaxcnn, build
every command's parser, import the bench, training and input-optimisation modules (a fresh process in which
``benchmarks/import_block.py`` makes the four unimportable, as ``benchmarks/gpu_check.py --dry-run`` does); and a
training run's metrics without tensorboardX go to metrics.jsonl alone."""

import json
import os
import subprocess
import sys

from jaxcnn.training.metrics_log import MetricsLog, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("tensorflow_datasets", "grain", "tensorboardX", "safetensors")
PROBE = """
import importlib, json, sys
importlib.import_module("jaxcnn.cli.main").build_parser()
for name in ("jaxcnn.bench.runner", "jaxcnn.training", "jaxcnn.training.evaluation", "jaxcnn.inputopt",
             "jaxcnn.weights", "benchmarks.train_agreement"):
    importlib.import_module(name)
try:
    import grain
    blocked = False
except ModuleNotFoundError as err:
    blocked = "blocked" in str(err)
print(json.dumps({"loaded": sorted(m for m in %r if m in sys.modules), "blocked": blocked}))
""" % (BLOCKED,)


def test_the_package_imports_without_the_optional_packages(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    with open(os.path.join(ROOT, "benchmarks", "import_block.py")) as f:
        (block / "sitecustomize.py").write_text(f.read())
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}",
           "JAXCNN_BLOCK_MODULES": ",".join(BLOCKED)}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"loaded": [], "blocked": True}


def test_metrics_without_tensorboardx_go_to_the_jsonl(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)     # `import tensorboardX` now raises ImportError
    log = MetricsLog(str(tmp_path))
    log.write(5, loss=1.5)
    log.close()
    assert read_rows(str(tmp_path / "metrics.jsonl")) == [{"step": 5, "loss": 1.5}]
    assert "tensorboardX is not installed" in capsys.readouterr().err and not (tmp_path / "tensorboard").exists()
