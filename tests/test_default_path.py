"""The path a user gets by default, end to end: one CPU device, the CPU fast paths on.

The rest of the suite runs with 8 simulated devices (``conftest.py``), where the oneDNN
convolutions and C++ kernels stay off (``jaxcnn.cpu.policy.onednn_convs``), so there the fast
paths are tested op by op only. Here ONE child process (``python -m tests.test_default_path OUT``)
runs with JAX's default device count and the policy's defaults, and does what a user does first:

  * ``jaxcnn train max_steps=3`` (the default run: ResNet-18 on the bundled digits) through the
    command line's ``main``;
  * a PGD attack and a DeepDream step on the suite's small digits classifier;
  * parity of AlexNet (plain), ResNet-18 (batch norm) and Inception-v3 with the stored
    torchvision references (``tests/test_parity.py``, ``tests/parity/``).

It writes what it saw to ``results.json``; the tests below read it. Each part records its own
error, so one failure does not hide the others. The child shares the suite's compilation cache
(``JAXCNN_COMPILE_CACHE``, set by ``conftest.py``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback

import pytest

from tests.single_device import ROOT, run_child


# Parity on the fast path, measured as in test_parity.py: max |jaxcnn - torch| / max |torch| per compared
# array. The oneDNN convolutions and matmuls sum in another order than XLA's, and Winograd's transforms
# (ResNet-18 at 97 px, Inception-v3 at both sizes) round differently from a direct convolution, up to
# about 1e-5 of a layer's magnitude (jaxcnn/cpu/winograd.py). What these models meet, with room for
# another CPU's instruction set: 2e-5, five times tighter than the reference path's bound there.
FAST_PATH_TOLERANCE = 2e-5
PARITY_MODELS = ("alexnet", "resnet18", "inception_v3")
PGD_EPS = 8 / 255


# ---------------------------------------------------------------- the child process

def _part(results: dict, name: str):
    """Decorator: runs the function, storing its dict (or its traceback) under ``name``."""
    def wrap(fn):
        try:
            results[name] = fn()
        except Exception:  # noqa: BLE001 -- reported by the test reading this part
            results[name] = {"error": traceback.format_exc()}
        return fn
    return wrap


_KERNELS = ("jaxcnn_conv_", "jaxcnn_winograd_", "jaxcnn_max_pool_", "jaxcnn_batch_norm_", "jaxcnn_matmul")


def _kernels(compiled) -> list[str]:
    """Which of the fast path's C++ kernels (custom calls) a compiled program calls."""
    hlo = compiled.as_text()
    return [k for k in _KERNELS if k in hlo]


def _policy() -> dict:
    import jax
    import jax.numpy as jnp

    from jaxcnn import cpu
    from jaxcnn.cpu import build, policy
    from tests.tiny_model import TinyCNN

    model = TinyCNN(num_classes=10)
    x = jnp.zeros((4, 16, 16, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)

    def loss(params, x):   # a training-mode forward and backward: convolutions, pools, batch norm
        logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])[0]
        return jnp.sum(logits)

    compiled = cpu.jit(jax.grad(loss)).lower(variables["params"], x).compile()
    return {"device_count": jax.device_count(), "backend": jax.default_backend(), "mode": policy.get_mode(),
            "fast_paths": policy.fast_paths(), "onednn_convs": policy.onednn_convs(),
            "winograd": policy.winograd_enabled(), "onednn_built": build.available(),
            "kernels": _kernels(compiled)}


def _train(workdir: str) -> dict:
    import contextlib
    import io

    from jaxcnn.cli.main import main
    from jaxcnn.training.metrics_log import read_rows

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "max_steps=3", f"workdir={workdir}", "--no-progress"])
    ckpts = os.path.join(workdir, "checkpoints")
    return {"exit_code": code, "stdout": out.getvalue(), "rows": read_rows(os.path.join(workdir, "metrics.jsonl")),
            "checkpoints": sorted(os.listdir(ckpts)) if os.path.isdir(ckpts) else []}


def _pgd() -> dict:
    import numpy as np

    from jaxcnn.inputopt import attacks
    from tests.trained_digits import digits_classifier

    model, variables, x, y, clean = digits_classifier()
    x, y = x[:64], y[:64]
    res = attacks.pgd(model, variables, x, y, eps=PGD_EPS, steps=10)
    images = np.asarray(res.images)
    return {"clean_accuracy": clean, "success_rate": res.success_rate, "linf_max": float(np.max(res.linf)),
            "measured_linf": float(np.max(np.abs(images - x))), "min": float(images.min()),
            "max": float(images.max())}


def _deepdream() -> dict:
    import jax
    import jax.numpy as jnp

    from jaxcnn.data.image_io import center_crop, resize_shorter, sample_photos
    from jaxcnn.imagenet import preprocess
    from jaxcnn.inputopt.dream import deepdream
    from tests.trained_digits import SIZE, digits_classifier

    model, variables, *_ = digits_classifier()
    photo = jnp.asarray(center_crop(resize_shorter(sample_photos()["chelsea"], SIZE + 8), SIZE + 8))[None]
    dreamed = deepdream(model, variables, photo, "block1", octaves=1, steps_per_octave=4, jitter=2)
    # the objective (the layer's mean squared activation), computed here apart from the library's
    energy = jax.jit(lambda x: jnp.mean(jnp.square(model.apply(variables, preprocess(x))[1]["block1"])))
    return {"before": float(energy(photo)), "after": float(energy(dreamed)), "shape": list(dreamed.shape),
            "min": float(dreamed.min()), "max": float(dreamed.max())}


def _parity(name: str, workdir: str) -> dict:
    import jax
    import numpy as np

    import jaxcnn
    from tests.parity.cases import CASES
    from tests.parity.synthetic import relative_error, sample, synthetic_images, synthetic_state_dict

    case = CASES[name]
    ref = np.load(os.path.join(ROOT, "tests", "data", "parity", f"{name}.npz"))
    path = os.path.join(workdir, f"{name}.safetensors")
    jaxcnn.write_state_dict(synthetic_state_dict(json.loads(str(ref["keys"])), name), path)
    model, variables = jaxcnn.load_pretrained(name, path, **case.get("options", {}))
    forward = jax.jit(functools.partial(model.apply, train=False))
    errors, kernels = {}, {}
    for size in case["sizes"]:
        x = synthetic_images(name, size).transpose(0, 2, 3, 1)
        compiled = forward.lower(variables, x).compile()
        kernels[size] = _kernels(compiled)
        logits, feats = compiled(variables, x)
        errors[f"logits@{size}"] = relative_error(sample(name, "logits", logits), ref[f"logits_{size}"])
        for key in case["features"]:
            ours = feats[key]
            if ours.ndim == 4 and ours.shape[1:3] == (1, 1) and len(ref[f"shape_{size}_{key}"]) == 2:
                ours = ours.reshape(ours.shape[0], -1)  # make_refs stores (N, C, 1, 1) maps as (N, C)
            errors[f"{key}@{size}"] = relative_error(sample(name, key, ours), ref[f"feat_{size}_{key}"])
    return {"errors": errors, "kernels": kernels}


def child(out_dir: str) -> None:
    import time

    from jaxcnn.cli import compile_cache

    compile_cache.enable()
    results: dict = {"seconds": {}}

    def timed(name, fn):
        t0 = time.perf_counter()
        _part(results, name)(fn)
        results["seconds"][name] = round(time.perf_counter() - t0, 1)

    timed("policy", _policy)
    timed("train", lambda: _train(os.path.join(out_dir, "run")))
    timed("pgd", _pgd)
    timed("deepdream", _deepdream)
    for name in PARITY_MODELS:
        timed(f"parity/{name}", lambda name=name: _parity(name, out_dir))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def results():
    return run_child("tests.test_default_path", timeout=900)


def _get(results: dict, part: str) -> dict:
    got = results[part]
    assert "error" not in got, got.get("error")
    return got


def test_the_child_runs_on_one_device_with_the_fast_paths_on(results):
    p = _get(results, "policy")
    assert p["device_count"] == 1 and p["backend"] == "cpu" and p["mode"] == "auto"
    assert p["fast_paths"] and p["onednn_convs"] and p["winograd"] and p["onednn_built"]
    # a small CNN's compiled training-mode gradient calls the C++ convolution, pool and batch norm
    assert {"jaxcnn_conv_", "jaxcnn_max_pool_", "jaxcnn_batch_norm_"} <= set(p["kernels"]), p


def test_default_training_run_writes_a_checkpoint_and_metrics(results):
    t = _get(results, "train")
    assert t["exit_code"] == 0, t["stdout"]
    assert "resnet18 on digits" in t["stdout"] and "after 3 steps" in t["stdout"], t["stdout"]
    steps = [int(c) for c in t["checkpoints"] if c.isdigit()]   # orbax also keeps the run's first step
    assert steps and max(steps) == 3, t["checkpoints"]
    train_rows = [r for r in t["rows"] if "train/loss" in r]
    eval_rows = [r for r in t["rows"] if "eval/top1" in r]
    assert [r["step"] for r in train_rows] == [3] and [r["step"] for r in eval_rows] == [3], t["rows"]
    loss = train_rows[0]["train/loss"]
    assert 0 < loss < 10 and 0 <= eval_rows[0]["eval/top1"] <= 1, t["rows"]   # finite: NaN fails both bounds
    assert 0 < eval_rows[0]["eval/loss"] < 10


def test_pgd_attack_succeeds_within_its_budget(results):
    a = _get(results, "pgd")
    assert a["clean_accuracy"] > 0.9
    assert a["success_rate"] > 0.9, a
    assert a["linf_max"] <= PGD_EPS * (1 + 1e-5) and a["measured_linf"] <= PGD_EPS * (1 + 1e-5) + 1e-6, a
    assert a["min"] >= 0 and a["max"] <= 1


def test_deepdream_step_raises_the_layer_energy(results):
    d = _get(results, "deepdream")
    assert d["min"] >= 0 and d["max"] <= 1
    assert d["after"] > 1.5 * d["before"] > 0, d


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_fast_path_matches_torchvision(results, name):
    got = _get(results, f"parity/{name}")
    errors, kernels = got["errors"], got["kernels"]
    assert all("jaxcnn_conv_" in k for k in kernels.values()), kernels   # oneDNN's convolutions ran
    if name != "alexnet":   # AlexNet's 3x3 and 5x5 layers have too few tiles at these sizes
        assert any("jaxcnn_winograd_" in k for k in kernels.values()), kernels
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FAST_PATH_TOLERANCE, (worst, errors)


if __name__ == "__main__":
    child(sys.argv[1])
